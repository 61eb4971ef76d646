#!/bin/bash
# Run on the development machine (it reaches PyPI) before a device call:
# fetches into .whl/ the one wheel benchmarks/device/gpu.sh needs that the
# lent GPU image lacks (gin-config; it has JAX with CUDA, Flax, Optax, absl
# and NumPy). The device call then names .whl in `carry`.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl
mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform any \
  -d .whl 'gin-config==0.5.0'
ls -l .whl
