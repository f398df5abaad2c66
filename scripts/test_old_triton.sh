#!/usr/bin/env bash
# The Triton kernels' import, launch and interpreter tests under the oldest supported Triton (3.3.1: PyTorch
# 2.7's), in a venv that takes everything else (torch, pytest) from the system's Python. ~30 s with the wheel
# cached. OLD_TRITON picks another release; the venv is kept in the user cache dir.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OLD_TRITON=${OLD_TRITON:-3.3.1}
venv="${XDG_CACHE_HOME:-$HOME/.cache}/comfyui-quantized-ci/triton-$OLD_TRITON"
if ! "$venv/bin/python" -c "import sys, triton; sys.exit(triton.__version__ != '$OLD_TRITON')" 2>/dev/null; then
  rm -rf "$venv"
  "$PY" -m venv --system-site-packages "$venv"
  # pip notes that the system's torch asks for a newer Triton: expected, that is the point of this run.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "triton==$OLD_TRITON" 2>&1 \
    | grep -v "dependency resolver\|requires triton\|requires setuptools\|is ignored: it is neither" || true
fi
"$venv/bin/python" -c "import triton; print('Triton kernels under triton', triton.__version__)"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit/test_triton_*.py tests/unit/test_hints.py
