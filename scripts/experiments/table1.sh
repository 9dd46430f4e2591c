#!/bin/bash
# Table 1: which 25% of the layers to train. Position rows (front / middle / back / uniform) and the
# importance rows: the K layers ranked highest by each metric of region-score on the all-layer run
# (--region_layers top:K:METRIC:scores.json). K = NUM_LAYERS/4 (8 of 32). DRY_RUN=1 prints the commands.
source "$(dirname "$0")/common.sh"
EXP=${EXP:-$EXP_ROOT/table1-$CODEBASE}
K=$((NUM_LAYERS / 4)); MID=$(((NUM_LAYERS - K) / 2))
SCORES="$EXP/all/scores/scores.json"

train_and_eval all all
# Scores of the fully tuned model: hidden-state/attention metrics on the training data, param_* vs the backbone.
run region-score --model-path "$(model_dir all)" --model-base "$MODEL_BASE" --data "$DATA_PATH" \
  --image-folder "$IMAGE_FOLDER" --metrics bi,mm_bi,angular,attn,param_ratio,param_angular \
  --backbone "$BACKBONE_DIR" --num-samples "$SCORE_SAMPLES" --out "$EXP/all/scores"

RUNS=(all)
for row in "front:0-$((K - 1))" "middle:$MID-$((MID + K - 1))" "back:$((NUM_LAYERS - K))-$((NUM_LAYERS - 1))" \
           "uniform:uniform:$K"; do
  name=${row%%:*}; spec=${row#*:}
  echo "# $name: $(resolved "$spec")"
  train_and_eval "$name" "$spec"; RUNS+=("$name")
done
for metric in bi mm_bi angular attn param_ratio param_angular; do
  echo "# importance $metric: top $K layers of $SCORES"
  train_and_eval "top-$metric" "top:$K:$metric:$SCORES"; RUNS+=("top-$metric")
done
report "${RUNS[@]}"
