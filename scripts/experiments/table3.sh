#!/bin/bash
# Table 3: model sizes. LLaVA-1.5 7B (32 layers) and 13B (40 layers), each trained on all layers and
# on the 25% region; with CODEBASE=bunny, the Bunny model types in BUNNY_MODELS ("TYPE=BASE_DIR ...").
# DRY_RUN=1 prints the commands.
source "$(dirname "$0")/common.sh"

if [ "$CODEBASE" = llava ]; then
  for size in ${SIZES:-7b 13b}; do
    layers=32; [ "$size" = 13b ] && layers=40
    (
      MODEL_NAME=llava-v1.5-$size MODEL_BASE=lmsys/vicuna-$size-v1.5 NUM_LAYERS=$layers \
      PRETRAIN_MM=./checkpoints/llava-v1.5-$size-pretrain/mm_projector.bin EXP=$EXP_ROOT/table3-llava-$size
      source "$(dirname "$0")/common.sh"
      echo "# LLaVA-1.5 $size: 25% = $(resolved 25%)"
      train_and_eval all all
      train_and_eval region-25 25%
      report all region-25
    )
  done
else
  for entry in ${BUNNY_MODELS:-llama3-8b=/path/to/Meta-Llama-3-8B-Instruct phi-2=/path/to/phi-2}; do
    (
      MODEL_TYPE=${entry%%=*} MODEL_BASE=${entry#*=} MODEL_NAME= VERSION= PRETRAIN_MM=
      EXP=$EXP_ROOT/table3-bunny-${entry%%=*}
      source "$(dirname "$0")/common.sh"
      train_and_eval all all
      train_and_eval region-25 25%
      report all region-25
    )
  done
fi
