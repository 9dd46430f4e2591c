#!/bin/bash
# Fig 4: pruning 0-4 layers. Region mode (only layers outside the region, ranked by angular distance)
# on the region-trained model vs ordinary global block pruning on the fully trained one.
# DRY_RUN=1 prints the commands.
source "$(dirname "$0")/common.sh"
EXP=${EXP:-$EXP_ROOT/fig4-$CODEBASE}
MAX_PRUNE=${MAX_PRUNE:-4}
METRIC=${METRIC:-angular}

train_and_eval region-0 25%
train_and_eval global-0 all
RUNS=(region-0 global-0)
for mode in region global; do
  run region-score --model-path "$(model_dir "$mode-0")" --model-base "$MODEL_BASE" --data "$DATA_PATH" \
    --image-folder "$IMAGE_FOLDER" --metrics "$METRIC" --num-samples "$SCORE_SAMPLES" --out "$EXP/$mode-0/scores"
  for k in $(seq 1 "$MAX_PRUNE"); do
    out="$EXP/$mode-$k/$MODEL_NAME-$mode-pruned-$k"   # merged checkpoint: no "lora" in the name
    if [ "$SKIP_EXISTING" = 1 ] && [ -f "$out/prune_report.json" ]; then echo "# $out exists: skipped"; else
      run mkdir -p "$EXP/$mode-$k"
      run region-prune --model-path "$(model_dir "$mode-0")" --model-base "$MODEL_BASE" --out "$out" --mode "$mode" \
        --num-prune "$k" --scores "$EXP/$mode-0/scores/scores.json" --metric "$METRIC" \
        --data "$DATA_PATH" --image-folder "$IMAGE_FOLDER"
    fi
    evaluate "$mode-$k" "$out"; RUNS+=("$mode-$k")
  done
done
report "${RUNS[@]}"
