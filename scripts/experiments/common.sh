#!/bin/bash
# Shared by the paper's experiment scripts (sourced). Every path is an environment variable whose
# default is upstream's (LLaVA: scripts/v1_5/finetune_lora.sh + scripts/v1_5/eval/*.sh; Bunny:
# script/train/finetune_lora.sh + script/eval/full/*.sh). Run from the upstream checkout's root.
#   DRY_RUN=1   print every command instead of running it
#   CODEBASE    llava (default) | bunny
set -euo pipefail

CODEBASE=${CODEBASE:-llava}
DRY_RUN=${DRY_RUN:-0}
EXP_ROOT=${EXP_ROOT:-./checkpoints/region-experiments}
LAUNCHER=${LAUNCHER:-deepspeed --module}      # e.g. "torchrun --nproc_per_node 8 -m"
NUM_LAYERS=${NUM_LAYERS:-32}                  # decoder layers of MODEL_BASE (vicuna-7b, Llama-3-8B: 32)
SKIP_EXISTING=${SKIP_EXISTING:-1}             # reuse a finished training/prune output
MMLU_DIR=${MMLU_DIR:-./playground/data/eval/mmlu/data}   # per-subject CSVs (dev/, test/)
BBH_DIR=${BBH_DIR:-./playground/data/eval/bbh}           # one TASK.json per BBH task
SCORE_SAMPLES=${SCORE_SAMPLES:-200}
TRAIN_ARGS=${TRAIN_ARGS:-}                    # extra training flags, appended last (they win), e.g. a CPU smoke run

case "$CODEBASE" in
  llava)
    MODEL_NAME=${MODEL_NAME:-llava-v1.5-7b}
    MODEL_BASE=${MODEL_BASE:-lmsys/vicuna-7b-v1.5}
    VERSION=${VERSION:-v1}
    DATA_PATH=${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}
    IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data}
    VISION_TOWER=${VISION_TOWER:-openai/clip-vit-large-patch14-336}
    PRETRAIN_MM=${PRETRAIN_MM:-./checkpoints/${MODEL_NAME}-pretrain/mm_projector.bin}
    ZERO_CONFIG=${ZERO_CONFIG-./scripts/zero3.json}   # empty: no --deepspeed
    BATCH=${BATCH:-16}; GRAD_ACC=${GRAD_ACC:-1}
    EVAL_ROOT=${EVAL_ROOT:-./playground/data/eval}
    BENCHMARKS=${BENCHMARKS-pope textvqa}   # empty: text tasks only
    ;;
  bunny)
    MODEL_TYPE=${MODEL_TYPE:-llama3-8b}
    MODEL_NAME=${MODEL_NAME:-bunny-$MODEL_TYPE}
    MODEL_BASE=${MODEL_BASE:-/path/to/base_llm_model}
    if [ "$MODEL_TYPE" = llama3-8b ]; then VERSION=${VERSION:-llama}; else VERSION=${VERSION:-bunny}; fi
    DATA_PATH=${DATA_PATH:-./data/finetune/bunny_695k.json}
    IMAGE_FOLDER=${IMAGE_FOLDER:-./data/finetune/images}
    VISION_TOWER=${VISION_TOWER:-/path/to/siglip-so400m-patch14-384}
    PRETRAIN_MM=${PRETRAIN_MM:-./checkpoints-pretrain/bunny-$MODEL_TYPE-pretrain/mm_projector.bin}
    ZERO_CONFIG=${ZERO_CONFIG-./script/deepspeed/zero3.json}
    BATCH=${BATCH:-8}; GRAD_ACC=${GRAD_ACC:-2}
    EVAL_ROOT=${EVAL_ROOT:-./eval}
    BENCHMARKS=${BENCHMARKS-pope}
    ;;
  *) echo "error: CODEBASE=$CODEBASE; use llava or bunny" >&2; exit 2 ;;
esac
BACKBONE_DIR=${BACKBONE_DIR:-$MODEL_BASE}    # a local copy of MODEL_BASE, for param_* scores and revert

# Print (DRY_RUN=1) or run one command.
run() {
  if [ "$DRY_RUN" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}

# Same, with stdout+stderr also saved to LOG (upstream eval scripts print their scores).
run_logged() {
  local log=$1; shift
  if [ "$DRY_RUN" = 1 ]; then printf '%q ' "$@"; echo "2>&1 | tee $log"; else "$@" 2>&1 | tee "$log"; fi
}

# model_dir RUN_NAME: where a run's training output goes; upstream loaders route on the name
# ("llava"/"bunny" + "lora"), so the name carries both.
model_dir() { echo "$EXP/$1/$MODEL_NAME-$1-lora"; }

# train RUN_NAME SPEC [DATA]: upstream LoRA finetune through region_plugin; SPEC "all" = every layer.
train() {
  local name=$1 spec=$2 data=${3:-$DATA_PATH} out
  out=$(model_dir "$name")
  if [ "$SKIP_EXISTING" = 1 ] && [ -f "$out/adapter_config.json" ]; then echo "# $out exists: skipped"; return; fi
  local region=() ds=()
  [ "$spec" != all ] && region=(--region_layers "$spec")
  [ -n "$ZERO_CONFIG" ] && ds=(--deepspeed "$ZERO_CONFIG")
  local common=(--lora_enable True --lora_r 128 --lora_alpha 256 --mm_projector_lr 2e-5 "${ds[@]}"
    --model_name_or_path "$MODEL_BASE" --version "$VERSION" --data_path "$data" --image_folder "$IMAGE_FOLDER"
    --vision_tower "$VISION_TOWER" --pretrain_mm_mlp_adapter "$PRETRAIN_MM" --mm_projector_type mlp2x_gelu
    --image_aspect_ratio pad --bf16 True --output_dir "$out" --num_train_epochs 1
    --per_device_train_batch_size "$BATCH" --per_device_eval_batch_size 4 --gradient_accumulation_steps "$GRAD_ACC"
    --evaluation_strategy no --save_strategy steps --save_steps 50000 --save_total_limit 1 --learning_rate 2e-4
    --weight_decay 0. --warmup_ratio 0.03 --lr_scheduler_type cosine --logging_steps 1 --tf32 True
    --model_max_length 2048 --gradient_checkpointing True --dataloader_num_workers 4 --lazy_preprocess True
    --report_to none)
  if [ "$CODEBASE" = llava ]; then
    # shellcheck disable=SC2086
    run $LAUNCHER region_plugin.llava.train "${common[@]}" --mm_vision_select_layer -2 --mm_use_im_start_end False \
      --mm_use_im_patch_token False --group_by_modality_length True "${region[@]}" $TRAIN_ARGS
  else
    # shellcheck disable=SC2086
    run $LAUNCHER region_plugin.bunny.train "${common[@]}" --model_type "$MODEL_TYPE" \
      --group_by_modality_length False "${region[@]}" $TRAIN_ARGS
  fi
}

# upstream_vqa MODEL BASE QUESTIONS IMAGES ANSWERS: upstream's batch eval script for the codebase.
upstream_vqa() {
  local model=$1 base=$2 questions=$3 images=$4 answers=$5 b=()
  [ -n "$base" ] && b=(--model-base "$base")
  if [ "$CODEBASE" = llava ]; then
    run python -m llava.eval.model_vqa_loader --model-path "$model" "${b[@]}" --question-file "$questions" \
      --image-folder "$images" --answers-file "$answers" --temperature 0 --conv-mode vicuna_v1
  else
    run python -m bunny.eval.model_vqa_loader --model-path "$model" "${b[@]}" --model-type "$MODEL_TYPE" \
      --question-file "$questions" --image-folder "$images" --answers-file "$answers" --temperature 0 \
      --conv-mode "$VERSION"
  fi
}

record() {  # record RUN NAME LOG PATTERN: the score upstream printed -> RUN/benchmarks.json
  run python -m region_plugin.reporting.record --run "$1" --name "$2" --log "$3" --pattern "$4"
}

# evaluate RUN_NAME MODEL [BASE]: upstream benchmarks (BENCHMARKS) + the paper's text tasks, into $EXP/RUN_NAME/eval.
evaluate() {
  local name=$1 model=$2 base=${3:-} dir="$EXP/$1/eval" b=()
  [ -n "$base" ] && b=(--model-base "$base")
  run mkdir -p "$dir"
  for bench in $BENCHMARKS; do
    case "$CODEBASE:$bench" in
      llava:pope|bunny:pope)
        local q="$EVAL_ROOT/pope/${CODEBASE}_pope_test.jsonl"
        upstream_vqa "$model" "$base" "$q" "$EVAL_ROOT/pope/val2014" "$dir/pope_answers.jsonl"
        if [ "$CODEBASE" = llava ]; then local pope=(python -m llava.eval.eval_pope); else local pope=(python "$EVAL_ROOT/pope/eval_pope.py"); fi
        run_logged "$dir/pope.log" "${pope[@]}" --annotation-dir "$EVAL_ROOT/pope/coco" --question-file "$q" \
          --result-file "$dir/pope_answers.jsonl"
        record "$EXP/$name" POPE "$dir/pope.log" "F1 score:" ;;
      llava:textvqa)
        upstream_vqa "$model" "$base" "$EVAL_ROOT/textvqa/llava_textvqa_val_v051_ocr.jsonl" \
          "$EVAL_ROOT/textvqa/train_images" "$dir/textvqa_answers.jsonl"
        run_logged "$dir/textvqa.log" python -m llava.eval.eval_textvqa \
          --annotation-file "$EVAL_ROOT/textvqa/TextVQA_0.5.1_val.json" --result-file "$dir/textvqa_answers.jsonl"
        record "$EXP/$name" TextVQA "$dir/textvqa.log" "Accuracy:" ;;
      *) echo "error: BENCHMARKS has $bench, not known for $CODEBASE (llava: pope textvqa; bunny: pope)" >&2; exit 2 ;;
    esac
  done
  run region-eval-text --model-path "$model" "${b[@]}" --task mmlu --data "$MMLU_DIR" --shots 5 --out "$dir"
  run region-eval-text --model-path "$model" "${b[@]}" --task bbh --data "$BBH_DIR" --shots 0 --out "$dir"
}

# train_and_eval RUN_NAME SPEC [DATA]
train_and_eval() {
  train "$1" "$2" "${3:-}"
  evaluate "$1" "$(model_dir "$1")" "$MODEL_BASE"
}

# report RUN_NAME...: region-report over $EXP/RUN_NAME dirs into $EXP/report.
report() {
  local dirs=()
  for name in "$@"; do dirs+=("$EXP/$name"); done
  run region-report "${dirs[@]}" --out "$EXP/report"
}

# resolved SPEC: the explicit layer list a spec names for NUM_LAYERS (printed as a comment).
resolved() {
  if [ "$1" = all ]; then echo "all $NUM_LAYERS"; else region-layers --num-layers "$NUM_LAYERS" "$1" 2>/dev/null || echo "$1"; fi
}
