#!/usr/bin/env bash
# How much of a comparison is the trainer seed: each model of the MovieLens 100K and MovieTweetings rows
# of docs/results.md trained with trainer seeds 0-9 (initialisation and shuffling; the split stays),
# one CPU thread per run, JOBS runs at a time; then `python scripts/seed_summary.py OUT`.
#
#   scripts/seed_study.sh OUT ML_U_DATA [JOBS [FILTER]]
#   e.g. scripts/seed_study.sh runs/seeds ../shared/data/ml-100k/u.data 2
#
# FILTER: an awk regular expression; only the settings whose name matches it run (e.g. '^ml-': the MovieLens
# 100K runs).
# 80 runs; about 20 minutes on 2 cores (the recipes' settings of docs/results.md).
set -uo pipefail
OUT=$(realpath -m "$1"); ML_DATA=$2; JOBS=${3:-$(nproc)}; FILTER=${4:-.}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
ML="recipes/movielens-100k.yaml --data.path=$ML_DATA"
MT="recipes/movietweetings.yaml"
COMMON="--logger.name=none --trainer.num_threads=1 --trainer.accelerator=cpu --trainer.enable_progress_bar=false"
# builds the fused LSTM cell once, before the parallel runs share its cache
rrnx fit $ML --model.name=rrn --trainer.max_epochs=1 $COMMON --out "$OUT/.warm" --overwrite > "$OUT/.warm.log" 2>&1 \
  || { tail -5 "$OUT/.warm.log"; exit 1; }
jobs_file="$OUT/jobs.txt"; : > "$jobs_file"
for s in 0 1 2 3 4 5 6 7 8 9; do  # the longest runs first
  echo "mt-rrn-s$s $MT --model.name=rrn"
  echo "ml-rrn-s$s $ML --model.name=rrn"
  echo "mt-timesvdpp-s$s $MT --model.name=timesvdpp"
  echo "ml-timesvdpp-s$s $ML --model.name=timesvdpp"
  echo "mt-rrn-stationary-s$s $MT --model.name=rrn --trainer.max_epochs=1"  # epoch 0: the stationary part
  echo "ml-rrn-stationary-s$s $ML --model.name=rrn --trainer.max_epochs=1"
  echo "ml-biasedmf-s$s $ML --model.name=biasedmf"
  echo "mt-bias-s$s $MT --model.name=bias"
done | awk -v filter="$FILTER" '$1 ~ filter' > "$jobs_file"
run_one() {
  name=$1; shift
  rrnx fit "$@" --trainer.seed="${name##*-s}" $COMMON --out "$OUT/$name" --overwrite > "$OUT/$name.log" 2>&1 \
    && rm -rf "$OUT/$name/checkpoints" && echo "done $name" || echo "FAILED $name (see $OUT/$name.log)"
}
export -f run_one; export COMMON OUT
start=$(date +%s)
xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _ < "$jobs_file"
echo "all done in $(( $(date +%s) - start )) s; now: python scripts/seed_summary.py $OUT"
