#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine: a torch when none is present (the pinned
# build, override with TORCH_SPEC), the pack's and the test suite's packages, and, when a ComfyUI
# checkout is found (COMFYUI_PATH or ~/comfy/ComfyUI), ComfyUI's own requirements minus its torch lines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  pip_install ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
  pip_install --no-deps torchaudio==2.11.0
fi
pip_install -r requirements.txt -r requirements-dev.txt

comfy="${COMFYUI_PATH:-$HOME/comfy/ComfyUI}"
if [ -f "$comfy/requirements.txt" ]; then
  grep -vE '^\s*(torch|torchvision|torchaudio)\s*($|[<>=!~;])' "$comfy/requirements.txt" > /tmp/comfyui-quantized-comfy-req.txt
  pip_install -r /tmp/comfyui-quantized-comfy-req.txt
else
  echo "no ComfyUI checkout at $comfy: tests/comfy will be skipped (set COMFYUI_PATH)"
fi

# Chromium for the browser test (tests/comfy/test_web_browser.py): Debian's package, only as root with apt,
# never fatal (offline machines skip that test).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -q && apt-get install -y -q chromium) >/dev/null 2>&1 || echo "chromium not installed: the browser test will be skipped"
fi
