#!/usr/bin/env bash
# Installs bbf-dopamine and the two packages that setup.py cannot declare
# (see setup.py's docstring): one command for a working Dopamine + BBF.
# Usage: bash scripts/install.sh [pip extras, e.g. test]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
extras=${1:-}
target="."
if [ -n "$extras" ]; then target=".[$extras]"; fi
"$PYTHON" -m pip install -q --upgrade pip
"$PYTHON" -m pip install -q -e "$target"
# Dopamine imports baselines.common.atari_wrappers without declaring it.
"$PYTHON" -m pip install -q --no-deps 'baselines==0.1.5'
# tensorflow-probability 0.25.0 (the newest release) breaks on current JAX;
# this nightly works. Pinned so every install gets the same files.
"$PYTHON" -m pip install -q --no-deps --force-reinstall 'tfp-nightly==0.26.0.dev20261027'
"$PYTHON" -c "import bbf_dopamine.compat as c; c.check_installation()"
