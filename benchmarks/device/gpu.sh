#!/bin/bash
# The GPU figures of benchmarks/RESULTS.md in one device call:
#
#   bash benchmarks/device/prepare.sh          # here, once
#   run(command="bash benchmarks/device/gpu.sh", carry=[".whl"], timeout_s=540)
#
# Times BBF's jitted gradient step (benchmarks/train_step.py) at widths 1 and
# 4 in float32 and at width 4 in bf16 (half_precision), one JSON line per
# figure into $OUT/gpu_train_step.jsonl, the GPU and package versions into
# $OUT/gpu_env.txt, then prints a short table. The whole-loop benchmark
# (loop.py) needs Dopamine and hence TensorFlow, which the GPU image lacks;
# see benchmarks/device/README.md for how the 100k projection is made.
# WIDTHS, HIDDEN and REPEATS shrink the run (tests/test_benchmarks.py runs it
# on the CPU); each benchmark gets PER_RUN_S seconds at most.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/bbf-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if ! "$PY" -c 'import gin' 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/bbf-site .whl/*.whl || {
    echo 'gin-config is missing: run benchmarks/device/prepare.sh here and' \
      'name .whl in carry' >&2; exit 2; }
  export PYTHONPATH=/tmp/bbf-site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
# Runs of the same width share compiled code (the replay ratio only changes
# the projection), so the second one skips XLA's compile.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/bbf-jax-cache}
LOG=$OUT/gpu_train_step.jsonl
: > "$LOG"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
    --format=csv 2>&1 || echo 'no nvidia-smi'
  "$PY" -c 'import sys, importlib.metadata as md, jax
print("python", sys.version.split()[0])
for name in ("jax", "jaxlib", "flax", "optax", "numpy", "gin-config"):
  print(name, md.version(name))
print("devices", jax.devices())'
} > "$OUT/gpu_env.txt" 2>&1
cat "$OUT/gpu_env.txt"

status=0
bench() {  # width replay_ratio half_precision
  timeout "${PER_RUN_S:-240}" "$PY" benchmarks/train_step.py \
    --width_scale "$1" --replay_ratio "$2" --half_precision="$3" \
    --hidden_dim "${HIDDEN:-2048}" --repeats "${REPEATS:-10}" >> "$LOG" \
    || { echo "train_step.py --width_scale $1 --replay_ratio $2" \
           "--half_precision=$3 failed (rc $?)" >&2; status=1; }
}
for width in ${WIDTHS:-1 4}; do
  bench "$width" 64 false
  bench "$width" 256 false
done
last=${WIDTHS:-1 4}
bench "${last##* }" 64 true

"$PY" - "$LOG" <<'PY'
import collections, json, sys
rows = collections.defaultdict(dict)
for line in open(sys.argv[1]):
  r = json.loads(line)
  key = (r['width_scale'], r['replay_ratio'], r['half_precision'])
  rows[key][r['figure']] = r['value']
print('width rr bf16 | compile_s  s/step  TFLOP/s  act_ms  peak_GiB  100k_train_h')
for (w, rr, bf16), f in sorted(rows.items(), key=lambda i: (i[0][2], i[0])):
  peak = f.get('device_peak_bytes') or 0
  print(f"{w:5} {rr // 32:2} {str(bf16):5} | {f['train_compile_s']:8.1f} "
        f"{f['train_s_per_gradient_step']:7.4f} "
        f"{f['train_achieved_flops_per_s'] / 1e12:8.2f} "
        f"{f['act_s_per_call'] * 1e3:7.2f} {peak / 2**30:9.2f} "
        f"{f['projected_100k_train_hours']:12.3f}")
PY
exit $status
