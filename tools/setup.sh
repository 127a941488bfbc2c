#!/usr/bin/env bash
# Set up vqaudio in ./.venv on a fresh machine: the CPU build of torch first (so nothing pulls a CUDA
# build), then the package. With --dev: the test extras and the Debian tools the tests use
# (espeak-ng for synthetic speech, opus-tools and codec2 for the baselines, sox, chromium for the browser
# checks of report.html).
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1
python=${PYTHON:-python3}

log() { echo "[setup $(date +%H:%M:%S)] $*" >&2; }

if [ "$dev" = 1 ]; then
  missing=()
  command -v espeak-ng >/dev/null || missing+=(espeak-ng)
  command -v opusenc >/dev/null || missing+=(opus-tools)
  command -v c2enc >/dev/null || missing+=(codec2)
  command -v sox >/dev/null || missing+=(sox)
  command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "installing Debian packages: ${missing[*]}"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      log "warning: missing ${missing[*]} (apt-get install them); tests that need them will be skipped"
    fi
  fi
fi

[ -x .venv/bin/python ] || { log "creating .venv"; "$python" -m venv .venv; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  log "installing torch==2.13.0 (CPU build)"
  .venv/bin/python -m pip install -q torch==2.13.0
fi
extras=metrics,plots,train
[ "$dev" = 1 ] && extras=dev
log "installing vqaudio[$extras]"
.venv/bin/python -m pip install -q -e ".[$extras]"
log "done: $(.venv/bin/python -c 'import torch, vqaudio; print("vqaudio", vqaudio.__version__, "torch", torch.__version__)')"
