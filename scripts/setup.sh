#!/usr/bin/env bash
# Create .venv in the repository root and install kebr with everything it needs, from PyPI only;
# then .venv-slurm, the Snakemake that submits to SLURM (README "Clusters"). Idempotent: a second
# run re-checks the install and takes seconds.
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
# Every package at its version in requirements.lock (written by `python scripts/lock.py`), then kebr.
.venv/bin/python -m pip install --quiet -r requirements.lock
.venv/bin/python -m pip install --quiet --no-deps -e .
.venv/bin/python -c "import kebr, torch, mediapipe, faster_whisper, h5py; print('kebr', kebr.__version__, 'torch', torch.__version__)"

# The submitting Snakemake with the SLURM executor plugin, in a venv of its own: the plugin needs
# numpy >= 2, mediapipe (in .venv) numpy < 2. Same Snakemake version as .venv, so a workflow run
# by either reads the other's .snakemake/ state. The jobs it submits run .venv's Python.
SLURM_PLUGIN="snakemake-executor-plugin-slurm==2.8.0"
SNAKEMAKE_VERSION=$(.venv/bin/python -c "import snakemake; print(snakemake.__version__)")
if ! .venv/bin/python -c "import sys; sys.exit(sys.version_info < (3, 11))"; then
    echo "setup: no .venv-slurm: $SLURM_PLUGIN needs Python 3.11+" >&2
    exit 0
fi
if [ ! -x .venv-slurm/bin/python ]; then
    "$(.venv/bin/python -c 'import sys; print(sys._base_executable)')" -m venv .venv-slurm
fi
.venv-slurm/bin/python -m pip install --quiet --upgrade pip
.venv-slurm/bin/python -m pip install --quiet "snakemake==$SNAKEMAKE_VERSION" "$SLURM_PLUGIN" jsonschema pyyaml
.venv-slurm/bin/python -c "import snakemake, snakemake_executor_plugin_slurm as p; print('submit venv: snakemake', snakemake.__version__)"
