"""Pretraining (KEBR-SPEC.md section 5, paper 3.5): predict the masked sentiment word's lexicon score.

The pretraining head reads the fused vector X_K at the mask token; L_task = L1(prediction,
mask_label); L = L_task + lambda * L_mcc. The LM is frozen in the reference (pass a model config with
``freeze_text=True``); TCMF and the pretraining head train with Adam at ``lr``. The fine-tuning head
is frozen here: it gets no gradient in this stage.

A frozen LM is a fixed feature extractor unless ``frozen_lm_dropout`` keeps its dropout on (the
reference, which left BERT in train mode). Fixed, its states are computed once per clip into a
sidecar per shard in ``lm_cache_dir`` (``lm_cache``: "float16", "float32" or "none";
kebr/train/lm_cache.py), and every epoch trains TCMF + head from them. ``bucket_by_length``: batches of similar text length
(kebr/train/data.py); ``log_every_steps``: progress lines within an epoch.

Outputs in ``out_dir``: ``epoch-NNNN/`` states (``save_epochs`` and the newest; see
kebr/train/checkpoint.py), ``last`` -> newest, ``log.csv`` (one row per epoch: loss, l_task, l_mcc,
cos_a, cos_v, lr_backbone, lr_head, seconds, samples_per_s) and ``tensorboard/`` when tensorboard is
installed. Calling again on the same ``out_dir`` resumes after the last saved epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from kebr.model import KEBR, KEBRConfig
from kebr.shards import ShardDataset
from kebr.train.checkpoint import state_name
from kebr.train.data import make_loader
from kebr.train.lm_cache import DTYPES, attach_lm_cache, build_sidecars
from kebr.train.loop import Objective, adam, check_shards, fit, mcc_settings, setup

# The reference pretraining MCC (spec 4): its own loss form, g = 0.25, lambda = 0.5.
DEFAULT_MCC = {"enabled": True, "variant": "reference", "g": 0.25, "weight": 0.5}
SAVE_EPOCHS = (1, 5, 10, 20, 50, 100, 150, 200)


def pretrain(
    shard_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    model_config: KEBRConfig,
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-4,
    mcc: dict[str, Any] | None = None,
    save_epochs: Sequence[int] = SAVE_EPOCHS,
    seed: int = 0,
    device: str = "auto",
    num_workers: int = 0,
    amp: bool = True,
    compile: bool | str = "auto",
    max_steps_per_epoch: int | None = None,
    split: str | None = None,
    bucket_by_length: bool = True,
    lm_cache: str = "float16",
    frozen_lm_dropout: bool = False,
    log_every_steps: int = 50,
    lm_cache_dir: str | Path | None = None,
) -> Path:
    """Pretrain on every clip of the shards (``split`` restricts to one split: the paper uses the
    whole pretraining corpus) and return the final state directory.

    ``mcc``: keys enabled, variant (paper | reference), g, weight, text_positions (real | all);
    missing keys take DEFAULT_MCC. ``batch_size`` is per process under DDP. ``amp``: bf16 autocast,
    CUDA only.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if lm_cache != "none":
        if lm_cache not in DTYPES:
            raise ValueError(f"lm_cache must be none, float16 or float32, got {lm_cache!r}")
        if not model_config.freeze_text or frozen_lm_dropout:
            raise ValueError("pretrain.lm_cache needs a fixed LM (pretrain.freeze_text: true and "
                             "pretrain.frozen_lm_dropout: false); set pretrain.lm_cache: none")
    out_dir = Path(out_dir)
    mcc = mcc_settings(mcc, DEFAULT_MCC)
    train_config = {"stage": "pretrain", "shard_paths": [str(p) for p in shard_paths], "split": split,
                    "epochs": epochs, "batch_size": batch_size, "lr": lr, "mcc": mcc,
                    "save_epochs": list(save_epochs), "seed": seed, "device": device,
                    "num_workers": num_workers, "amp": amp, "compile": compile,
                    "max_steps_per_epoch": max_steps_per_epoch, "bucket_by_length": bucket_by_length,
                    "lm_cache": lm_cache, "frozen_lm_dropout": frozen_lm_dropout,
                    "log_every_steps": log_every_steps}
    runtime = setup(device, seed, amp)
    # A corpus whose frames fit in IN_MEMORY_AUTO_BYTES (the demo, MOSI-sized) is held in RAM.
    dataset = ShardDataset(shard_paths, split=split, stage="pretrain", in_memory="auto")
    check_shards(dataset, model_config, split or "pretraining")

    model = KEBR(model_config).to(runtime.device)
    model.text.frozen_dropout = frozen_lm_dropout
    model.finetune_head.requires_grad_(False)
    optimizer = adam(model.param_groups(lr, lr))
    generator = torch.Generator().manual_seed(seed)
    if lm_cache != "none":
        folder = None if lm_cache_dir is None else Path(lm_cache_dir)
        attach_lm_cache(dataset, build_sidecars(dataset.paths, model.text, dtype=lm_cache, runtime=runtime,
                                                folder=folder))
    loader = make_loader(dataset, batch_size, runtime, shuffle=True, num_workers=num_workers,
                         generator=generator, bucket_by_length=bucket_by_length)
    state = fit(out_dir, model=model, train_loader=loader, optimizer=optimizer, scheduler=None,
                objective=Objective("pretrain", mcc), runtime=runtime,
                epochs=epochs, max_steps_per_epoch=max_steps_per_epoch, compile=compile,
                save_epochs=tuple(save_epochs), model_config=model_config, train_config=train_config,
                generator=generator, log_every_steps=log_every_steps)
    return out_dir / state_name(state["epoch"])
