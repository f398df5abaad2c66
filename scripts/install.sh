#!/usr/bin/env bash
# Installs the pack's packages into one Python (PYTHON, default: the first python3 on PATH; say which below).
#   bash scripts/install.sh          what ComfyUI needs to run the pack: requirements.txt (safetensors, tqdm).
#   bash scripts/install.sh --dev    also what the tests need: a torch when none is present (TORCH_SPEC overrides
#                                    the pinned build), requirements-dev.txt, the requirements of a ComfyUI checkout
#                                    (COMFYUI_PATH or ~/comfy/ComfyUI) minus its torch lines, and, as root with apt,
#                                    Debian's chromium + fonts-noto-cjk for the browser test.
# Every step is announced before it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEV=0
case "${1:-}" in
  "") ;;
  --dev) DEV=1 ;;
  *) echo "usage: bash scripts/install.sh [--dev]" >&2; exit 2 ;;
esac
say() { echo "install.sh: $*"; }
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

say "python: $(command -v "$PY") ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
say "pip install -r requirements.txt (the pack's run-time needs)"
pip_install -r requirements.txt
[ "$DEV" = 1 ] || { say "done (developers and tests: bash scripts/install.sh --dev)"; exit 0; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  say "no torch in this python: pip install ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}, torchaudio==2.11.0 (--no-deps)"
  pip_install ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
  pip_install --no-deps torchaudio==2.11.0
fi
say "pip install -r requirements-dev.txt (the test suite's packages)"
pip_install -r requirements-dev.txt

comfy="${COMFYUI_PATH:-$HOME/comfy/ComfyUI}"
if [ -f "$comfy/requirements.txt" ]; then
  say "pip install ComfyUI's requirements from $comfy/requirements.txt (its torch lines left out)"
  grep -vE '^\s*(torch|torchvision|torchaudio)\s*($|[<>=!~;])' "$comfy/requirements.txt" > /tmp/comfyui-quantized-comfy-req.txt
  pip_install -r /tmp/comfyui-quantized-comfy-req.txt
else
  say "no ComfyUI checkout at $comfy: tests/comfy will be skipped (set COMFYUI_PATH)"
fi

# The browser test (tests/comfy/test_web_browser.py) drives Debian's Chromium; the templates' Chinese prompt
# needs a CJK font. Only as root with apt, never fatal (offline machines skip that test).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
fc-list :lang=zh 2>/dev/null | grep -q . || missing+=(fonts-noto-cjk)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "apt-get install ${missing[*]} (browser test)"
    (apt-get update -q && apt-get install -y -q "${missing[@]}") >/dev/null 2>&1 \
      || say "${missing[*]} not installed: the browser test will be skipped"
  else
    say "not installed: ${missing[*]} (needs root and apt): the browser test will be skipped"
  fi
fi
