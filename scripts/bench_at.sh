#!/usr/bin/env bash
# `rrnx bench` of another commit, for the back-to-back comparisons of docs/benchmarks.md (issue 10's
# targets are ratios to dc08368 measured on one machine): a git worktree of COMMIT and a venv that
# reuses this checkout's .venv packages with the worktree first on the path, so that the other
# commit's rrnx runs with the same torch, not this checkout's editable install.
#
#   scripts/bench_at.sh COMMIT [rrnx bench options ...]
#   e.g. scripts/bench_at.sh dc08368 --preset netflix-full --user-granularity 2mo --item-granularity 2mo
#        scripts/bench_at.sh 46d08c6 --threads 1 --epochs 2; then rrnx bench --threads 1 --epochs 2 here
#
# Both live in ${TMPDIR:-/tmp}/rrnx-bench-<commit> and are reused by the next call; to remove them:
# git worktree remove ${TMPDIR:-/tmp}/rrnx-bench-<commit>/tree && rm -r ${TMPDIR:-/tmp}/rrnx-bench-<commit>
set -euo pipefail
COMMIT=${1:?usage: scripts/bench_at.sh COMMIT [rrnx bench options ...]}; shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
SHA=$(git -C "$ROOT" rev-parse --short "$COMMIT^{commit}")
WORK=${TMPDIR:-/tmp}/rrnx-bench-$SHA
if [ ! -d "$WORK/tree" ]; then
  mkdir -p "$WORK"
  git -C "$ROOT" worktree add --detach "$WORK/tree" "$SHA" >/dev/null
fi
if [ ! -x "$WORK/venv/bin/python" ]; then
  "$PY" -m venv --without-pip "$WORK/venv"
  SITE=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # .pth files are read in name order: the worktree first, then this venv's packages (whose own .pth
  # files, the editable install of this checkout among them, are not read from there)
  echo "$WORK/tree" > "$SITE/0_rrnx_worktree.pth"
  "$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$SITE/1_packages.pth"
fi
cd "$WORK"  # not a checkout: '' on sys.path must not find this checkout's rrnx
echo "rrnx bench at $SHA ($(git -C "$ROOT" log -1 --format=%s "$SHA" | cut -c1-80))" >&2
exec "$WORK/venv/bin/python" -c 'import sys; from rrnx.cli import main; sys.exit(main(["bench", *sys.argv[1:]]))' "$@"
