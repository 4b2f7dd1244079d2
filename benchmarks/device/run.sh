#!/usr/bin/env bash
# The device check, ready for any CUDA box (about 8-9 minutes on one GPU; 10 at most).
# From the repository root:   bash benchmarks/device/run.sh [OUT_DIR]
# Needs a CUDA build of torch in .venv (or on PATH's python); it never downloads data or weights.
# Writes OUT_DIR/bench_gpu.json (one JSON of figures) and OUT_DIR/bench_gpu.log; default OUT_DIR: $OUT or results/.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR="${1:-${OUT:-results}}"
mkdir -p "$OUT_DIR"
PY=python
[ -x .venv/bin/python ] && PY=.venv/bin/python
if ! "$PY" -c "import fersearch" 2>/dev/null; then
  "$PY" -m pip install -q -e ".[dev]" >"$OUT_DIR/install.log" 2>&1 || { echo "install failed: $OUT_DIR/install.log"; exit 1; }
fi
"$PY" - <<'PY'
import torch
print("torch", torch.__version__, "cuda build", torch.version.cuda, "cuda available", torch.cuda.is_available())
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device visible to torch: install a CUDA build of torch (make install TORCH=...)")
print("gpu", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
PY
[ $? -eq 0 ] || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total,utilization.gpu --format=csv >"$OUT_DIR/nvidia-smi.csv" 2>&1 || true
# Each part has its own budget: a hang in one leaves the others' figures in the JSON.
timeout 540 "$PY" benchmarks/bench_gpu.py --out "$OUT_DIR/bench_gpu.json" 2>"$OUT_DIR/bench_gpu.log" >/dev/null
rc=$?
echo "bench_gpu rc=$rc; figures: $OUT_DIR/bench_gpu.json"
[ -f "$OUT_DIR/bench_gpu.json" ] && cat "$OUT_DIR/bench_gpu.json" || tail -20 "$OUT_DIR/bench_gpu.log"
exit $rc
