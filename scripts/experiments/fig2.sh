#!/bin/bash
# Fig 2: data scale. All layers vs the 25% region on 100%, 25% and 10% of the instruction data
# (a fixed random subset per fraction). DRY_RUN=1 prints the commands.
source "$(dirname "$0")/common.sh"
EXP=${EXP:-$EXP_ROOT/fig2-$CODEBASE}
FRACTIONS=${FRACTIONS:-100 25 10}

RUNS=()
for frac in $FRACTIONS; do
  data=$DATA_PATH
  if [ "$frac" != 100 ]; then
    data="$EXP/data/data-$frac.json"
    run mkdir -p "$EXP/data"
    run python -c 'import json, random, sys; d = json.load(open(sys.argv[1])); k = round(len(d) * int(sys.argv[2]) / 100); json.dump(random.Random(0).sample(d, k), open(sys.argv[3], "w"))' \
      "$DATA_PATH" "$frac" "$data"
  fi
  train_and_eval "all-data$frac" all "$data"; RUNS+=("all-data$frac")
  train_and_eval "region-data$frac" 25% "$data"; RUNS+=("region-data$frac")
done
report "${RUNS[@]}"
