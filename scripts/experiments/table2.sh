#!/bin/bash
# Table 2: how many layers to train, spread uniformly (the paper's lists for 32 layers:
# 16 = even layers, 8 = 0,4,8,12,18,22,26,30, 6 = 0,6,12,18,24,30, 4 = 0,10,20,30; `uniform:K`
# reproduces them and every resolved list is printed). DRY_RUN=1 prints the commands.
source "$(dirname "$0")/common.sh"
EXP=${EXP:-$EXP_ROOT/table2-$CODEBASE}
COUNTS=${COUNTS:-32 16 8 6 4 2 1}

RUNS=()
for k in $COUNTS; do
  if [ "$k" -ge "$NUM_LAYERS" ]; then spec=all; else spec="uniform:$k"; fi
  echo "# $k layers: $(resolved "$spec")"
  train_and_eval "layers-$k" "$spec"; RUNS+=("layers-$k")
done
report "${RUNS[@]}"
