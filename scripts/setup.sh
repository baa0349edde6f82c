#!/usr/bin/env bash
# Create .venv in the repository root and install kebr with everything it needs, from PyPI only.
# Idempotent: a second run re-checks the install and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, at the version these machines hold as a local CPU wheel; anything newer would pull a
# multi-GB CUDA build. On a GPU machine `pip install torch==2.13.0` gets the CUDA build from PyPI.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/python -c "import kebr, torch, mediapipe, faster_whisper, h5py; print('kebr', kebr.__version__, 'torch', torch.__version__)"
