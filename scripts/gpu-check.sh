#!/usr/bin/env bash
# The GPU check of issue 10 in one command, from the repository root of a machine with an NVIDIA GPU:
#
#   scripts/gpu-check.sh            # or: PYTHON=/path/to/python scripts/gpu-check.sh
#
# 1. finds a Python whose torch sees CUDA (this checkout's .venv-gpu, then $PYTHON, then python3), or
#    makes .venv-gpu with torch==2.13.0 (PyPI's Linux wheel is the CUDA build; needs the index);
#    installs this checkout into it (editable; offline with --no-deps where the index is unreachable;
#    on a machine without an index, wheels of the missing packages in .whl/ are installed first);
# 2. prints the GPU, torch, CUDA and cuDNN versions;
# 3. runs the GPU tests (tests/test_gpu.py, `pytest -m gpu`) and fails if they skip;
# 4. times `rrnx bench --accelerator gpu` at Netflix 6-month scale, 2 epochs (epoch 0 includes CUDA
#    and cuDNN warm-up), with cuDNN's packed LSTM and with the hand-written one, back to back, then
#    cuDNN with 8x larger batches;
# 5. prints the figures to copy into docs/benchmarks.md. About 5 minutes on one H200;
# 6. with two or more GPUs, first runs tests/test_gpu_ddp.py (DDP over NCCL, issue 11).
set -euo pipefail
cd "$(dirname "$0")/.."

has_cuda() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }

PY=""
for candidate in .venv-gpu/bin/python "${PYTHON:-}" python3; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null && has_cuda "$candidate"; then PY=$candidate; break; fi
done
if [ -z "$PY" ]; then
  echo "== no Python with a CUDA torch: making .venv-gpu"
  python3 -m venv .venv-gpu
  .venv-gpu/bin/pip install -q torch==2.13.0
  PY=.venv-gpu/bin/python
  has_cuda "$PY" || { echo "gpu-check: torch in .venv-gpu does not see a CUDA device (nvidia-smi?)"; exit 1; }
fi
if [ -d .whl ]; then  # a machine without a package index: the wheels carried beside the checkout
  echo "== installing the carried wheels (.whl/) offline"
  "$PY" -m pip install -q --no-index --no-deps .whl/*.whl
fi
# installed, not just importable from here: the models register through the package's entry points
registered='import sys; from importlib.metadata import entry_points; sys.exit(0 if any(e.name == "rrn" for e in entry_points(group="rrnx.models")) else 1)'
if ! "$PY" -c 'import rrnx, lightning, pytest' 2>/dev/null || ! "$PY" -c "$registered" \
   || [ "$("$PY" -c 'import rrnx, pathlib; print(pathlib.Path(rrnx.__file__).resolve().parents[1])')" != "$PWD" ]; then
  echo "== installing this checkout into $PY"
  if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .
  else
    "$PY" -m pip install -q -e ".[dev]" || "$PY" -m pip install -q --no-deps --no-build-isolation -e .
  fi
fi

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"device {torch.cuda.get_device_name(0)}, {torch.get_num_threads()} CPU threads")
EOF

echo "== GPU tests"
log=$(mktemp)
"$PY" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -rs 2>&1 | tee "$log" || true
failed=0
summary=$(tail -n 1 "$log")  # pytest's last line: "7 passed in ...", or with skipped/failed/errors
if ! grep -q "passed" <<<"$summary" || grep -q -E "skipped|failed|error" <<<"$summary"; then
  echo "gpu-check: the GPU tests did not all run and pass (the benches still run)"; failed=1
fi

if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  echo "== DDP over NCCL on two GPUs (issue 11)"
  "$PY" -m pytest -m gpu tests/test_gpu_ddp.py -q -p no:cacheprovider -rs 2>&1 | tee "$log" || true
  summary=$(tail -n 1 "$log")
  grep -q "passed" <<<"$summary" && ! grep -q -E "skipped|failed|error" <<<"$summary" || { echo "gpu-check: the two-GPU DDP tests failed"; failed=1; }
else
  echo "== one GPU: the two-GPU DDP check (tests/test_gpu_ddp.py) needs two devices; skipped"
fi

# the recipe's batches (4096 users, 512 items) with each kernel, then cuDNN with 8x larger batches (fewer,
# longer launches; a different optimisation, so its val RMSE differs)
for args in "--lstm-kernel cudnn" "--lstm-kernel torch" "--lstm-kernel cudnn --user-batch-size 32768 --item-batch-size 4096"; do
  echo "== \$ rrnx bench --accelerator gpu --epochs 2 $args   ($(uptime | sed 's/.*load/load/'))"
  # shellcheck disable=SC2086
  "$PY" -m rrnx.cli bench --accelerator gpu --epochs 2 $args 2>&1 | grep -v "^generated" || failed=1
done
echo "== done: copy the reports above into docs/benchmarks.md (\"RRN on a GPU\"); the target is epoch 1 <= 2 s"
exit $failed
