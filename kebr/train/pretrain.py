"""Pretraining (KEBR-SPEC.md section 5, paper 3.5): predict the masked sentiment word's lexicon score.

The pretraining head reads the fused vector X_K at the mask token; L_task = L1(prediction,
mask_label); L = L_task + lambda * L_mcc. The LM is frozen in the reference (``freeze_text``, which the
model config must agree with); TCMF and the pretraining head train with Adam at ``lr``. The
fine-tuning head is frozen here: it gets no gradient in this stage. The settings
(kebr/train/settings.py ``PretrainSettings``) mean what the schema's ``pretrain:`` says.

A frozen LM is a fixed feature extractor unless ``frozen_lm_dropout`` keeps its dropout on (the
reference, which left BERT in train mode). Fixed, its states are computed once per clip into a
sidecar per shard in ``lm_cache_dir`` (``lm_cache``: "float16", "float32" or "none";
kebr/train/lm_cache.py), and every epoch trains TCMF + head from them. ``bucket_by_length``: batches of similar text length
(kebr/train/data.py); ``log_every_steps``: progress lines within an epoch.

Outputs in ``out_dir``: ``epoch-NNNN/`` states (``save_epochs`` and the newest, written every
``checkpoint_minutes``; see kebr/train/checkpoint.py), ``last`` -> newest, ``log.csv`` (one row per epoch: loss, l_task, l_mcc,
cos_a, cos_v, lr_backbone, lr_head, seconds, samples_per_s) and ``tensorboard/`` when tensorboard is
installed. Calling again on the same ``out_dir`` resumes after the last saved epoch.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from kebr.model import KEBR, KEBRConfig
from kebr.shards import ShardDataset
from kebr.train.checkpoint import state_name
from kebr.train.data import make_loader
from kebr.train.lm_cache import attach_lm_cache, build_sidecars
from kebr.train.loop import Objective, adam, check_shards, fit, setup
from kebr.train.settings import PretrainSettings


def pretrain(
    shard_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    model_config: KEBRConfig,
    settings: PretrainSettings,
    seed: int = 0,
    max_steps_per_epoch: int | None = None,
    split: str | None = None,
    lm_cache_dir: str | Path | None = None,
) -> Path:
    """Pretrain on every clip of the shards (``split`` restricts to one split: the paper uses the
    whole pretraining corpus) and return the final state directory."""
    if model_config.freeze_text != settings.freeze_text:
        raise ValueError(f"the model config has freeze_text {model_config.freeze_text}, the pretraining "
                         f"settings {settings.freeze_text}")
    out_dir = Path(out_dir)
    # freeze_text is recorded with the model config, so the train config leaves it out; how often the
    # run writes its state is no part of what it trained with (it resumes to the same weights).
    train_config = {"stage": "pretrain", "shard_paths": [str(p) for p in shard_paths], "split": split,
                    **{k: v for k, v in asdict(settings).items() if k not in ("freeze_text", "checkpoint_minutes")}, "seed": seed,
                    "max_steps_per_epoch": max_steps_per_epoch}
    runtime = setup(settings.device, seed, settings.amp)
    # A corpus whose frames fit in IN_MEMORY_AUTO_BYTES (the demo, MOSI-sized) is held in RAM.
    dataset = ShardDataset(shard_paths, split=split, stage="pretrain", in_memory="auto")
    check_shards(dataset, model_config, split or "pretraining")

    model = KEBR(model_config).to(runtime.device)
    model.text.frozen_dropout = settings.frozen_lm_dropout
    model.finetune_head.requires_grad_(False)
    optimizer = adam(model.param_groups(settings.lr, settings.lr))
    generator = torch.Generator().manual_seed(seed)
    if settings.lm_cache != "none":
        folder = None if lm_cache_dir is None else Path(lm_cache_dir)
        attach_lm_cache(dataset, build_sidecars(dataset.paths, model.text, dtype=settings.lm_cache, runtime=runtime,
                                                folder=folder))
    loader = make_loader(dataset, settings.batch_size, runtime, shuffle=True, num_workers=settings.num_workers,
                         generator=generator, bucket_by_length=settings.bucket_by_length)
    state = fit(out_dir, model=model, train_loader=loader, optimizer=optimizer, scheduler=None,
                objective=Objective("pretrain", settings.mcc), runtime=runtime,
                epochs=settings.epochs, max_steps_per_epoch=max_steps_per_epoch, compile=settings.compile,
                save_epochs=settings.save_epochs, model_config=model_config, train_config=train_config,
                generator=generator, log_every_steps=settings.log_every_steps,
                checkpoint_minutes=settings.checkpoint_minutes)
    return out_dir / state_name(state["epoch"])
