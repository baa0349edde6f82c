"""Training states on disk: write one atomically, find the latest, restore everything from it.

A run directory holds one directory per saved epoch::

    <run>/epoch-0005/model.safetensors   weights; metadata "kebr_config" and "train_config" (JSON)
    <run>/epoch-0005/state.pt            optimizer, scheduler, epoch, global step, history, extra,
                                         RNG states (torch, CUDA, numpy, python, DataLoader generator)
    <run>/last -> epoch-0005             symlink to the newest state (finetune also keeps ``best``)
    <run>/epoch-0003/model.safetensors   a weights-only state: fine-tuning's best epoch, held in memory
                                         until the next full state is written (``save_weights``)

A state is written into ``.tmp-epoch-0005-<pid>`` and renamed into place only when its files are
complete, so a process killed mid-save leaves at most a temporary directory, which is ignored and
later removed: every ``epoch-*`` directory is whole. A run resumes from the newest full state
(``saved_epochs``: those with ``state.pt``), never from a weights-only one, and never through the
symlinks. How often ``fit`` writes one: the settings' ``checkpoint_minutes`` (kebr/train/loop.py).

``state.pt`` holds only tensors and plain Python values (the numpy RNG state is converted), so it
loads with ``torch.load(weights_only=True)``: no arbitrary pickled code.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_model
from torch import nn

WEIGHTS = "model.safetensors"
STATE = "state.pt"
PREFIX = "epoch-"
TMP_PREFIX = ".tmp-"


def state_name(epoch: int) -> str:
    return f"{PREFIX}{epoch:04d}"


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def rng_states(generator: torch.Generator) -> dict[str, Any]:
    """Every random state training draws from: dropout (torch, CUDA), numpy, python, data order."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
        "generator": generator.get_state(),
    }


def set_rng_states(states: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    generator.set_state(states["generator"])


def save_state(run_dir: Path, epoch: int, *, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: Any | None, generator: torch.Generator, global_step: int,
               history: list[dict[str, Any]], extra: dict[str, Any], model_config: dict[str, Any],
               train_config: dict[str, Any]) -> Path:
    """Write the state after ``epoch`` as ``run_dir/epoch-NNNN`` (atomically) and point ``last`` at it.

    ``model`` is the plain module (not a DDP or compiled wrapper). Tied tensors are written once
    (safetensors' ``save_model``) and re-tied by ``load_model``.
    """
    final = _write_state_dir(run_dir, epoch, model, model_config, train_config, {
        "epoch": epoch,
        "global_step": global_step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "history": history,
        "extra": extra,
        "rng": rng_states(generator),
    })
    link(run_dir, "last", epoch)
    return final


def save_weights(run_dir: Path, epoch: int, *, model: nn.Module, model_config: dict[str, Any],
                 train_config: dict[str, Any]) -> Path:
    """Write ``model``'s weights alone as ``run_dir/epoch-NNNN`` (atomically): a state to load
    (``load_weights``, ``kebr predict``), not to resume from."""
    return _write_state_dir(run_dir, epoch, model, model_config, train_config, None)


def _write_state_dir(run_dir: Path, epoch: int, model: nn.Module, model_config: dict[str, Any],
                     train_config: dict[str, Any], state: dict[str, Any] | None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / state_name(epoch)
    tmp = run_dir / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    metadata = {"kebr_config": json.dumps(model_config, sort_keys=True),
                "train_config": json.dumps(train_config, sort_keys=True), "epoch": str(epoch)}
    save_model(model, str(tmp / WEIGHTS), metadata=metadata)
    names = [WEIGHTS]
    if state is not None:
        torch.save(state, tmp / STATE)
        names.append(STATE)
    for name in names:
        _fsync(tmp / name)
    if final.exists():
        # Only a weights-only state can be here: one a killed run wrote past the full state it resumed
        # from (a full state is never written twice). It is the same epoch's weights again.
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def link(run_dir: Path, name: str, epoch: int) -> None:
    """Point the symlink ``run_dir/name`` at ``epoch-NNNN`` (atomically: a new link renamed over it)."""
    tmp = run_dir / f"{TMP_PREFIX}{name}-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(state_name(epoch))
    os.replace(tmp, run_dir / name)


def _state_dirs(run_dir: Path) -> dict[int, Path]:
    """Every ``epoch-*`` directory of ``run_dir`` (full and weights-only states) by epoch."""
    if not run_dir.is_dir():
        return {}
    return {int(p.name[len(PREFIX):]): p for p in run_dir.iterdir() if p.name.startswith(PREFIX) and p.is_dir()}


def saved_epochs(run_dir: Path) -> list[int]:
    """Epochs with a complete state to resume from in ``run_dir`` (weights-only states left out), ascending."""
    return sorted(epoch for epoch, path in _state_dirs(run_dir).items() if (path / STATE).is_file())


def latest_state(run_dir: Path) -> Path | None:
    epochs = saved_epochs(run_dir)
    return run_dir / state_name(epochs[-1]) if epochs else None


def prune(run_dir: Path, keep: Iterable[int]) -> None:
    """Delete every state (full or weights-only) not in ``keep`` and any temporary directory a killed
    save left."""
    keep = set(keep)
    for epoch, path in _state_dirs(run_dir).items():
        if epoch not in keep:
            shutil.rmtree(path)
    for p in run_dir.glob(f"{TMP_PREFIX}*"):
        if p.is_symlink() or not p.is_dir():
            p.unlink()
        else:
            shutil.rmtree(p)


def read_configs(state_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model config, training config) stored with a state's weights."""
    with safe_open(str(state_dir / WEIGHTS), framework="pt") as f:
        metadata = f.metadata()
    return json.loads(metadata["kebr_config"]), json.loads(metadata["train_config"])


def load_weights(state_dir: Path, model: nn.Module) -> None:
    """Load a state's weights into ``model`` (every tensor must match)."""
    load_model(model, str(state_dir / WEIGHTS), strict=True, device=str(next(model.parameters()).device))


def read_weights(state_dir: Path) -> dict[str, torch.Tensor]:
    """A state's weights as a state dict on the CPU (for transferring part of them to another model)."""
    return load_file(str(state_dir / WEIGHTS))


def load_state(state_dir: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: Any | None, generator: torch.Generator) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and every RNG from a state; returns the state dict
    (epoch, global_step, history, extra). Call it last, after everything that draws random numbers
    has been built, so the RNG streams continue exactly where the saved run left them."""
    load_weights(state_dir, model)
    state = torch.load(state_dir / STATE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_states(state["rng"], generator)
    return state
