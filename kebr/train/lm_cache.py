"""The frozen LM of pretraining, run once per clip: its states in a sidecar file per shard.

Pretraining freezes the LM (spec 5). With its dropout off (``frozen_lm_dropout: false``) X0_t of a
clip is the same in every epoch, so ``pretrain.lm_cache`` computes it once and TCMF + head train from
the stored states for all epochs; the LM's forward pass, most of a pretraining step with BERT, is
paid once instead of once per epoch.

Layout, per shard ``<dataset>/shards/<shard>.h5``, in a folder beside the shards (the pipeline's
``results/<dataset>/lm_cache/``; by default the shards' folder's ``lm_cache/``)::

    lm_cache/<shard>-<lm>-<text>.h5
        hidden (N, L, d_t)  float16 (or float32), row i = LM(text/input_ids[i], text/attention_mask[i])
                            at the shard's full padded length L; contiguous
        attrs: dtype, text_model, shard (the shard's file name), n

The name holds everything the states depend on: ``<lm>`` hashes the LM's weights (SHA-1 over every
tensor), how they were computed (bf16 autocast or not, the attention kernel), the storage dtype and
this layout's version; ``<text>`` the shard's masked ``input_ids`` and attention mask. A sidecar is
read only under its exact name, so a rebuilt shard or another LM never meets a stale sidecar. When a
shard's text changed, its new sidecar replaces the old one of the same LM; sidecars of other LMs or
dtypes are left alone (another run may be reading them). A sidecar is written under a temporary name
and renamed when complete: a killed build loses only the shard it was writing, and its temporary file
is deleted by the next build on that host. Under DDP rank r builds the shards i % world_size == r,
then every rank waits for all of them.

Storage and "identical". The cached path computes what the uncached one does, in exact arithmetic.
With ``float32`` storage the two runs agree to float32 rounding: the cache computes a clip's states
in another batch (the shard's order, full length) than training draws it in, and CPU matrix-product
kernels may round a row differently in another batch shape (kebr/train/data.py), so bitwise equality
is not claimed; tests/test_lm_cache.py finds the epoch losses of two epochs equal to ~1e-7 relative.
``float16`` (the default) halves the disk and read volume and rounds every state to 11 significant
bits (relative error <= 2^-11 = 4.9e-4); losses then agree with the uncached run to ~1e-4 relative
(tested: < 1e-3), well below the spread of one more seed. States too large for float16 (|x| > 65504) stop
the build with a message to use float32.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import torch

from kebr.config import fingerprint
from kebr.model import TextEncoder
from kebr.shards import ShardDataset

log = logging.getLogger("kebr")

FORMAT = 1
DTYPES = {"float16": np.float16, "float32": np.float32}
BUILD_BATCH = 128  # clips per LM forward pass while building


def weights_sha1(encoder: TextEncoder) -> str:
    """SHA-1 over the LM's tensors (names and bytes): the LM a sidecar was computed with."""
    digest = hashlib.sha1()
    for name, tensor in sorted(encoder.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _inputs(shard: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(shard, "r") as f:
        return f["text/input_ids"][()], f["text/attention_mask"][()]


def lm_key(encoder: TextEncoder, dtype: str, runtime: Any) -> str:
    return fingerprint({"format": FORMAT, "lm": weights_sha1(encoder), "dtype": dtype, "bf16": runtime.amp,
                        "attention": str(encoder.model.config._attn_implementation)})


def text_key(shard: Path) -> str:
    ids, attention = _inputs(shard)
    return hashlib.sha1(ids.astype(np.int64).tobytes() + attention.astype(bool).tobytes()).hexdigest()[:16]


def sidecar_path(shard: Path, lm: str, text: str, folder: Path | None = None) -> Path:
    return (shard.parent / "lm_cache" if folder is None else folder) / f"{shard.stem}-{lm}-{text}.h5"


@torch.no_grad()
def _write_sidecar(shard: Path, path: Path, encoder: TextEncoder, dtype: str, runtime: Any) -> None:
    ids, attention = _inputs(shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    encoder.eval()
    with h5py.File(tmp, "w") as f:
        n, length = ids.shape
        # Contiguous, as the shards' arrays are (kebr/shards.py): training reads runs of rows.
        hidden = f.create_dataset("hidden", shape=(n, length, encoder.hidden_size), dtype=DTYPES[dtype],
                                  track_times=False)
        for start in range(0, n, BUILD_BATCH):
            batch = slice(start, start + BUILD_BATCH)
            with runtime.autocast():
                states = encoder(torch.from_numpy(ids[batch].astype(np.int64)).to(runtime.device),
                                 torch.from_numpy(attention[batch]).to(runtime.device))
            values = states.float().cpu().numpy().astype(DTYPES[dtype])
            if not np.isfinite(values).all():
                raise ValueError(f"{shard}: LM states do not fit in {dtype}; set pretrain.lm_cache: float32")
            hidden[batch] = values
        f.attrs.update({"dtype": dtype, "shard": shard.name, "n": n,
                        "text_model": str(encoder.model.config.name_or_path)})
    os.replace(tmp, path)


def _remove_killed_builds(folder: Path) -> None:
    """Delete temporary files of builds killed on this host (their process is gone)."""
    host = socket.gethostname()
    for tmp in folder.glob(f".*.{host}.*.tmp"):
        try:
            os.kill(int(tmp.name.rsplit(".", 2)[-2]), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, PermissionError):
            pass


def build_sidecars(shards: Sequence[Path], encoder: TextEncoder, *, dtype: str, runtime: Any,
                   folder: Path | None = None) -> list[Path]:
    """The sidecar of every shard (in order) in ``folder`` (None: ``lm_cache/`` in the shard's folder),
    computing the missing ones; stale ones of this LM are deleted."""
    if dtype not in DTYPES:
        raise ValueError(f"lm_cache dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    lm = lm_key(encoder, dtype, runtime)
    paths = []
    for i, shard in enumerate(map(Path, shards)):
        path = sidecar_path(shard, lm, text_key(shard), folder)
        paths.append(path)
        if path.exists() or i % runtime.world_size != runtime.rank:
            continue
        log.info("%s: computing the frozen LM's states once (%s)", shard, path.name)
        _write_sidecar(shard, path, encoder, dtype, runtime)
        for old in path.parent.glob(f"{shard.stem}-{lm}-*.h5"):  # this LM's states of an older shard
            if old != path:
                old.unlink(missing_ok=True)
    for parent in {p.parent for p in paths if p.parent.is_dir()}:  # once per folder, not once per shard
        _remove_killed_builds(parent)
    runtime.barrier()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"LM cache sidecars missing after the build: {missing[:3]}")
    return paths


def attach_lm_cache(dataset: ShardDataset, sidecars: Sequence[Path]) -> ShardDataset:
    """``dataset`` with ``text_hidden`` (L, d_t), the cached LM states, in every batch it reads."""
    if len(sidecars) != len(dataset.paths):
        raise ValueError(f"{len(sidecars)} sidecars for {len(dataset.paths)} shards")
    for shard, sidecar in zip(dataset.paths, sidecars):
        with h5py.File(shard, "r") as a, h5py.File(sidecar, "r") as b:
            if len(a["id"]) != b.attrs["n"]:
                raise ValueError(f"{sidecar} holds {b.attrs['n']} rows, {shard} {len(a['id'])}")
    dataset.attach("text_hidden", sidecars, "hidden")
    return dataset
