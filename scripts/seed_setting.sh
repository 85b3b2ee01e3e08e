#!/usr/bin/env bash
# One setting over trainer seeds 0-9: `rrnx fit RECIPE_AND_OVERRIDES --trainer.seed=K` into OUT/NAME-sK, one
# CPU thread per run, JOBS (default 2) at a time; `python scripts/seed_summary.py OUT` then prints every
# setting of OUT (mean and sd over seeds of the best epoch's validation and test RMSE).
#
#   scripts/seed_setting.sh OUT NAME RECIPE [--section.key=value ...]
#   e.g. scripts/seed_setting.sh runs/ml-explore nlr005 recipes/movielens-100k.yaml \
#          --data.path=../shared/data/ml-100k/u.data --model.name=rrn --model.net_lr=0.005
set -uo pipefail
OUT=$(realpath -m "$1"); NAME=$2; shift 2
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
COMMON="--logger.name=none --trainer.num_threads=1 --trainer.accelerator=cpu --trainer.enable_progress_bar=false"
run_one() {
  seed=$1; shift
  rrnx fit "$@" --trainer.seed="$seed" $COMMON --out "$OUT/$NAME-s$seed" --overwrite > "$OUT/$NAME-s$seed.log" 2>&1 \
    && rm -rf "$OUT/$NAME-s$seed/checkpoints" || echo "FAILED $NAME-s$seed (see $OUT/$NAME-s$seed.log)"
}
export -f run_one; export COMMON OUT NAME
printf '%s\n' 0 1 2 3 4 5 6 7 8 9 | xargs -P "${JOBS:-2}" -I{} bash -c 'run_one {} "$@"' _ "$@"
