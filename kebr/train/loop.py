"""What pretraining and fine-tuning share: device/DDP setup and seeding, the objective (L1 task loss +
MCC), one training epoch, prediction, and ``fit``: the epoch loop with checkpoints, automatic resume,
logs and progress (kebr/progress.py). Batches: kebr/train/data.py (length buckets, trimming).

The two stages differ only in what they read from a shard batch (``batch_inputs``):
- "pretrain": the MASKED text (or its cached LM states, kebr/train/lm_cache.py), the fused vector at
  the mask index, target = the masked word's lexicon label (``mask_label``);
- "finetune": the unmasked text (``raw_input_ids``), the mean over tokens, target = ``label``.

MCC text positions (``mcc.text_positions``): "real" flattens the fused sequence with padded text
positions (and padded audio/video frames) zeroed; "all" flattens every position, padding included,
as the reference did. Independent of ``model.mask_padding``, which is about attention only.

Determinism. Every random draw (model init, dropout, data order) comes from ``seed``; on the CPU,
``torch.use_deterministic_algorithms(True)`` is switched on (warn-only), so two runs with the same
seed give bit-identical weights, and a resumed run continues every RNG stream from
the saved state, giving the same weights as an uninterrupted run (world size 1).

DDP. Under torchrun (any WORLD_SIZE, 1 included: ``torchrun --nproc_per_node=1`` runs the DDP code
path on one GPU) each process trains on its share of the batches (kebr/train/data.py)
with ``batch_size`` samples per process; rank 0 writes checkpoints and logs; every rank evaluates the
whole valid/test set (identical results, no gather needed). On resume every rank restores rank 0's
RNG state (their dropout streams then coincide; gradients stay unbiased). The test suite runs one
process under torchrun with gloo (bench/gpu_check.sh --dry-run; the same script checks NCCL on a
GPU); a 2-process CPU run (``torchrun --nproc_per_node=2``, gloo) was checked by hand; NCCL on
several GPUs is untested.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from kebr.masking import load_tokenizer
from kebr.mcc import MCCLoss, modality_cosines
from kebr.model import KEBRConfig
from kebr.shards import vocab_sha1
from kebr.train.checkpoint import latest_state, link, load_state, prune, read_configs, save_state, save_weights
from kebr.train.data import Batches, text_keys, trim_text
from kebr.progress import Progress
from kebr.train.settings import MCCSettings

log = logging.getLogger("kebr")

# Training settings a resumed run may change (how long, which states to keep, where data and compute
# live, how often to log).
RESUMABLE_CHANGES = {"epochs", "save_epochs", "device", "num_workers", "shard_paths", "pretrained",
                     "log_every_steps"}
LOSS_TERMS = ("loss", "l_task", "l_mcc", "cos_a", "cos_v")


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int
    world_size: int
    amp: bool  # bf16 autocast, CUDA only
    distributed: bool = False  # launched by torchrun: a process group exists (world size 1 included)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self, enabled: bool = True) -> torch.autocast:
        """bf16 autocast when the runtime uses it and ``enabled`` (evaluation may run in fp32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp and enabled)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup(device: str, seed: int, amp: bool) -> Runtime:
    """Device (``auto`` = CUDA when available), process group under torchrun, seeds."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ  # torchrun sets both
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if distributed:
        local_rank = int(os.environ["LOCAL_RANK"])
        if use_cuda:
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        rank, target = dist.get_rank(), torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    else:
        rank, target = 0, torch.device("cuda" if use_cuda else "cpu")
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    if target.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    return Runtime(target, rank, world_size, amp=amp and target.type == "cuda", distributed=distributed)


def check_shards(dataset: Any, model_config: KEBRConfig, what: str) -> None:
    """The shards must match the model: feature widths and the tokenizer's vocabulary."""
    if len(dataset) == 0:
        raise ValueError(f"no {what} clips in the shards")
    attrs = dataset.attrs
    widths = (len(attrs["audio_columns"]), len(attrs["visual_columns"]))
    if widths != (model_config.d_audio, model_config.d_video):
        raise ValueError(f"shards have (d_audio, d_video) = {widths}, the model config "
                         f"{(model_config.d_audio, model_config.d_video)}")
    if attrs["vocab_sha1"] != vocab_sha1(load_tokenizer(model_config.text_model)):
        raise ValueError(f"shards were tokenized with another vocabulary than {model_config.text_model!r}'s")


# The names of ``KEBR.param_groups``' two groups, in its order (log columns lr_backbone, lr_head).
GROUP_NAMES = ("backbone", "head")


def trainable(groups: list[dict]) -> list[dict]:
    """Parameter groups, each with a ``name`` (its log column is lr_<name>), without frozen parameters
    (the frozen LM, the other stage's head). Groups that name themselves keep their names (fine-tuning's
    "fusion", kebr/train/finetune.py ``optimizer_groups``); ``KEBR.param_groups``' are GROUP_NAMES."""
    if not all("name" in g for g in groups):
        groups = [{**g, "name": name} for name, g in zip(GROUP_NAMES, groups, strict=True)]
    return [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]


def adam(groups: list[dict]) -> torch.optim.Adam:
    """Adam over ``trainable(groups)``, with PyTorch's fused kernel (CPU and CUDA): on the CPU it
    steps MiniLM's 23.7M parameters in 25 ms instead of the per-parameter loop's 218 ms."""
    return torch.optim.Adam(trainable(groups), fused=True)


def batch_inputs(batch: dict[str, torch.Tensor], stage: str, device: torch.device,
                 trim: bool = False) -> tuple[dict[str, torch.Tensor | None], torch.Tensor]:
    """KEBR.forward keyword arguments and the L1 target of one shard batch (module docstring);
    ``trim``: cut the text to the batch's longest real text (kebr/train/data.py)."""
    ids_key, mask_key = text_keys(stage)
    ids, attention = batch[ids_key], batch[mask_key]
    hidden = batch.get("text_hidden") if stage == "pretrain" else None
    if trim:
        ids, attention, hidden = trim_text(ids, attention, hidden)
    move = lambda x: x.to(device, non_blocking=True)  # noqa: E731
    inputs = {
        "input_ids": move(ids),
        "attention_mask": move(attention),
        "audio": move(batch["audio"]),
        "audio_mask": move(batch["audio_mask"]),
        "video": move(batch["video"]),
        "video_mask": move(batch["video_mask"]),
        "mask_index": move(batch["mask_index"]) if stage == "pretrain" else None,
    }
    if hidden is not None:
        inputs["text_hidden"] = move(hidden).float()  # stored as float16 by default
    return inputs, move(batch["mask_label" if stage == "pretrain" else "label"]).float()


class Objective:
    """L = L1(prediction, target) + weight * L_mcc (when MCC is enabled).

    The modality cosines and the unweighted MCC term are computed (and logged) even with MCC
    disabled, so runs with and without it can be compared. ``mcc.text_positions`` (module
    docstring) says whether padded text positions enter the cosines; where they cannot enter the
    result, batches are trimmed (``self.trim``; fine-tuning also needs ``masked_mean``).
    ``mcc.sequence`` says which fused sequence they take under ``model.fusion_gate`` (TCMF's X_K or
    the gated sequence the head reads), ``mcc.trains_lm`` whether the MCC's gradient reaches a
    trainable LM (KEBR.forward; the schema says why not by default).
    """

    def __init__(self, stage: str, mcc: MCCSettings, masked_mean: bool = True) -> None:
        self.stage = stage
        self.enabled = mcc.enabled
        self.mcc = MCCLoss(g=mcc.g, variant=mcc.variant, stage=stage, weight=mcc.weight, scale=mcc.scale)
        self.real_positions = mcc.text_positions == "real"
        # With MCC off its cosines are only logged: no second TCMF pass over stopped LM states for them.
        self.model_options = {"mcc_sequence": mcc.sequence, "mcc_trains_lm": mcc.trains_lm or not mcc.enabled}
        self.trim = self.real_positions and (stage == "pretrain" or masked_mean)

    def inputs(self, batch: dict[str, torch.Tensor], device: torch.device
               ) -> tuple[dict[str, Any], torch.Tensor, int]:
        """(model inputs, target, the batch's full text length before trimming)."""
        full = batch[text_keys(self.stage)[0]].shape[1]
        inputs, target = batch_inputs(batch, self.stage, device, self.trim)
        return inputs, target, full

    def cosines(self, fused: torch.Tensor, inputs: dict[str, Any], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (cos_a, cos_v) of the fused sequence at the shards' full text ``length``."""
        if not self.real_positions:
            return modality_cosines(fused, inputs["audio"], inputs["video"])
        attention = inputs["attention_mask"]
        if fused.shape[1] < length:  # trimmed: the cosines flatten the full padded layout (zeros)
            fused = F.pad(fused, (0, 0, 0, length - fused.shape[1]))
            attention = torch.cat([attention, attention.new_zeros(len(attention), length - attention.shape[1])], 1)
        return modality_cosines(fused, inputs["audio"], inputs["video"], fused_mask=attention,
                                audio_mask=inputs["audio_mask"], video_mask=inputs["video_mask"])

    def compile(self, mode: str | None) -> None:
        """Compile the whole loss computation (model forward, L1, cosines, MCC), so a launch-bound
        step runs as few kernels (and with ``mode="reduce-overhead"`` as replayed CUDA graphs), not
        only the model's part of it."""
        self._terms = torch.compile(self._terms, mode=mode)

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], runtime: Runtime) -> dict[str, Any]:
        """The loss terms of one shard batch (and ``n``, its size)."""
        inputs, target, length = self.inputs(batch, runtime.device)
        return self._terms(model, inputs, target, length, runtime)

    def _terms(self, model: nn.Module, inputs: dict[str, Any], target: torch.Tensor, length: int,
               runtime: Runtime) -> dict[str, Any]:
        with runtime.autocast():
            out = model(**inputs, **self.model_options)
        l_task = F.l1_loss(out["prediction"].float(), target)
        with torch.set_grad_enabled(self.enabled and torch.is_grad_enabled()):
            cos_a, cos_v = self.cosines(out["mcc_input"], inputs, length)
            l_mcc = self.mcc.per_sample(cos_a, cos_v).mean()
        loss = l_task + self.mcc.weight * l_mcc if self.enabled else l_task
        return {"loss": loss, "l_task": l_task, "l_mcc": l_mcc, "cos_a": cos_a.mean(), "cos_v": cos_v.mean(),
                "n": len(target)}


def train_epoch(model: nn.Module, loader: Iterable[dict[str, torch.Tensor]], optimizer: torch.optim.Optimizer, objective: Objective,
                runtime: Runtime, max_steps: int | None,
                progress: Progress | None = None) -> tuple[dict[str, float], int, int]:
    """One pass over the training data: (sample-weighted means of LOSS_TERMS, steps, samples)."""
    model.train()
    totals = torch.zeros(len(LOSS_TERMS) + 1, dtype=torch.float64, device=runtime.device)
    steps = 0
    for batch in islice(loader, max_steps):
        terms = objective(model, batch, runtime)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        n = terms["n"]
        values = torch.stack([terms[k].detach().double() for k in LOSS_TERMS])
        totals += torch.cat([values * n, totals.new_tensor([n])])
        steps += 1
        if progress is not None:
            progress.advance(items=n, terms=values)
    if runtime.distributed:
        dist.all_reduce(totals)
    samples = int(totals[-1].item())
    means = {k: float(v) / max(samples, 1) for k, v in zip(LOSS_TERMS, totals[:-1].tolist())}
    return means, steps, samples


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable[dict[str, torch.Tensor]], objective: Objective, runtime: Runtime,
            amp: bool = True) -> dict[str, np.ndarray]:
    """Over a loader, in its order, with the model in eval mode: ``prediction``, ``target`` and the
    per-sample modality cosines ``cos_a``, ``cos_v`` (as the objective takes them). ``amp=False``
    evaluates in fp32 even where training uses bf16 autocast."""
    model.eval()
    out: dict[str, list[torch.Tensor]] = {"prediction": [], "target": [], "cos_a": [], "cos_v": []}
    for batch in loader:
        inputs, target, length = objective.inputs(batch, runtime.device)
        with runtime.autocast(amp):
            result = model(**inputs, **objective.model_options)
        cos_a, cos_v = objective.cosines(result["mcc_input"], inputs, length)
        for key, value in (("prediction", result["prediction"]), ("target", target), ("cos_a", cos_a),
                           ("cos_v", cos_v)):
            out[key].append(value.float().cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (same keys) as a CSV, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _summary_writer(run_dir: Path) -> Any | None:
    """A TensorBoard writer when the tensorboard package is installed (optional), else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _check_resumable(state_dir: Path, model_config: dict[str, Any], train_config: dict[str, Any]) -> None:
    stored_model, stored_train = read_configs(state_dir)
    current = json.loads(json.dumps(train_config))  # tuples -> lists, as stored
    changed = sorted(k for k in stored_train.keys() | current.keys()
                     if k not in RESUMABLE_CHANGES and stored_train.get(k) != current.get(k))
    if stored_model != model_config or changed:
        raise ValueError(f"{state_dir} was written with other settings "
                         f"({'model config' if stored_model != model_config else ', '.join(changed)}); "
                         "use a new output directory")


def compile_mode(compile: bool | str, runtime: Runtime) -> str | None | bool:
    """torch.compile's mode for the config's ``compile`` (False: eager; None: the default mode):
    "auto" is CUDA graphs on one CUDA device, eager on a CPU and under DDP (schema description)."""
    if compile == "auto":
        return "reduce-overhead" if runtime.device.type == "cuda" and not runtime.distributed else False
    if compile not in (True, False, "reduce-overhead"):
        raise ValueError(f"compile must be auto, true, false or reduce-overhead, got {compile!r}")
    return None if compile is True else compile


class _Checkpoints:
    """When ``fit`` writes a state, and fine-tuning's best weights until it does (``fit``'s docstring)."""

    def __init__(self, run_dir: Path, model: nn.Module, minutes: float, save_epochs: tuple[int, ...],
                 epochs: int) -> None:
        self.run_dir, self.model, self.seconds = run_dir, model, minutes * 60
        self.save_epochs, self.epochs = set(save_epochs), epochs
        self.last_write = time.monotonic()
        self.best_copy: nn.Module | None = None  # the best epoch's weights while they are not on disk
        self.best_held = False

    def due(self, epoch: int) -> bool:
        return (epoch == self.epochs or epoch in self.save_epochs
                or time.monotonic() - self.last_write >= self.seconds)

    def hold_best(self) -> None:
        """The epoch just trained is the best and is not written now: copy its weights to the CPU."""
        if self.best_copy is None:
            self.best_copy = copy.deepcopy(self.model).to("cpu")
        else:
            self.best_copy.load_state_dict(self.model.state_dict())
        self.best_held = True

    def write_best(self, best: int | None, epoch: int, model_config: dict[str, Any],
                   train_config: dict[str, Any]) -> None:
        """Before the state of ``epoch``: the held best epoch's weights, if it is an earlier one."""
        if self.best_held and best is not None and best != epoch:
            save_weights(self.run_dir, best, model=self.best_copy, model_config=model_config,
                         train_config=train_config)

    def written(self) -> None:
        self.last_write, self.best_held = time.monotonic(), False


def fit(run_dir: Path, *, model: nn.Module, train_loader: Batches, optimizer: torch.optim.Optimizer,
        scheduler: Any | None, objective: Objective, runtime: Runtime, epochs: int,
        max_steps_per_epoch: int | None, compile: bool | str, save_epochs: tuple[int, ...], model_config: KEBRConfig,
        train_config: dict[str, Any], generator: torch.Generator,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None, select_by: str = "mae",
        log_every_steps: int = 0, checkpoint_minutes: float = 0) -> dict[str, Any]:
    """Train up to ``epochs``, resuming from the latest state in ``run_dir`` if there is one.

    After every epoch: ``evaluate`` (if given) scores the model on held-out data; the best epoch is the
    one with the lowest ``select_by`` value of it (``mae`` or ``loss``; ties keep the earlier epoch);
    the scheduler steps; ``log.csv`` is rewritten from the history. The state is written (kept:
    ``save_epochs``, the newest, the best) after the last epoch, after a save epoch, and after any
    epoch once ``checkpoint_minutes`` have passed since the last write (0: every epoch); until then
    the best epoch's weights wait in a CPU copy of the model and are written with the next state. A
    resumed run rewrites ``log.csv`` from its state's history, so it matches what the run trained.
    ``log_every_steps``: progress lines within an epoch (kebr/progress.py).

    ``generator`` must be the one ``train_loader`` draws its order from. Returns the final state
    (epoch, global_step, history, extra = {"best_epoch", "best_valid_<key>" for every key of
    ``evaluate``'s result} when evaluating).
    """
    config = model_config.to_dict()
    state: dict[str, Any] = {"epoch": 0, "global_step": 0, "history": [], "extra": {}}
    latest = latest_state(run_dir)
    if latest is not None:
        _check_resumable(latest, config, train_config)
        state = load_state(latest, model=model, optimizer=optimizer, scheduler=scheduler, generator=generator)
        log.info("%s: resuming after epoch %d", run_dir, state["epoch"])
    forward = model
    if runtime.distributed:
        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        # find_unused_parameters: the other stage's head never enters this stage's loss.
        forward = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    mode = compile_mode(compile, runtime)
    if mode is not False:
        log.info("%s: compiling the loss step (torch.compile mode %s)", run_dir, mode or "default")
        objective.compile(mode)
    writer = _summary_writer(run_dir) if runtime.is_main else None
    steps_per_epoch = len(train_loader) if max_steps_per_epoch is None else min(len(train_loader), max_steps_per_epoch)
    progress = Progress(str(run_dir), epochs * steps_per_epoch, unit="step", done=state["epoch"] * steps_per_epoch,
                        every=log_every_steps, terms=LOSS_TERMS, rate_unit="sample", rate_scale=runtime.world_size,
                        sections=epochs, enabled=runtime.is_main)
    checkpoints = _Checkpoints(run_dir, model, checkpoint_minutes, save_epochs, epochs)
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    for epoch in range(state["epoch"] + 1, epochs + 1):
        lrs = {f"lr_{g['name']}": g["lr"] for g in optimizer.param_groups}
        started = time.perf_counter()
        progress.start_section(epoch, steps_per_epoch)
        try:
            means, steps, samples = train_epoch(forward, train_loader, optimizer, objective, runtime,
                                                max_steps_per_epoch, progress)
        finally:
            progress.end_section()
        seconds = time.perf_counter() - started
        row: dict[str, Any] = {"epoch": epoch, **means, **lrs, "seconds": round(seconds, 3),
                               "samples_per_s": round(samples / seconds, 3)}
        new_best = False
        if evaluate is not None:
            valid = evaluate(model)
            row.update({f"valid_{k}": v for k, v in valid.items()})
            best = state["extra"].get(f"best_valid_{select_by}")
            if "best_epoch" not in state["extra"] or valid[select_by] < best:
                state["extra"] = {"best_epoch": epoch, **{f"best_valid_{k}": v for k, v in valid.items()}}
                new_best = True
        if scheduler is not None:
            scheduler.step()
        state["history"].append(row)
        state["epoch"], state["global_step"] = epoch, state["global_step"] + steps
        log.info("%s epoch %d: %s", run_dir, epoch, {k: float(f"{v:.4g}") for k, v in row.items() if k != "epoch"})
        if runtime.is_main:
            best = state["extra"].get("best_epoch")
            if checkpoints.due(epoch):
                checkpoints.write_best(best, epoch, config, train_config)
                save_state(run_dir, epoch, model=model, optimizer=optimizer, scheduler=scheduler,
                           generator=generator, global_step=state["global_step"], history=state["history"],
                           extra=state["extra"], model_config=config, train_config=train_config)
                checkpoints.written()
                if best is not None:
                    link(run_dir, "best", best)
                prune(run_dir, {*save_epochs, epoch, *([best] if best is not None else [])})
            elif new_best:
                checkpoints.hold_best()
            write_csv(run_dir / "log.csv", state["history"])
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch":
                        writer.add_scalar(key, value, epoch)
                writer.flush()
        runtime.barrier()
    if writer is not None:
        writer.close()
    return state
