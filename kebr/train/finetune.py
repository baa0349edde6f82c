"""Fine-tuning and evaluation (KEBR-SPEC.md section 6): predict each clip's sentiment label.

The model starts from a pretraining state's LM + TCMF (``pretrained``; None = ablations C2/C5, the
plain LM and a fresh TCMF) with a NEW fine-tuning head on the mean of X_K over tokens. The text is the
clip's unmasked transcript (the shards' ``raw_input_ids``). L = L1(prediction, label) + lambda * L_mcc.
Adam with two learning rates (LM + TCMF ``lr_backbone``, head ``lr_head``), or three with
``lr_fusion`` (TCMF in a group of its own: the paper's "5e-6 for BERT and 1e-4 for other parameters",
4.2; the reference code trained TCMF at the LM's rate, main.py:85-86), and CosineAnnealingLR
(``t_max``) stepped once per epoch. The LM trains unless the model config freezes it.

After every epoch the model is scored on the valid split; the best epoch is the one with the lowest
valid MAE (``select_by="valid_mae"``), the lowest valid loss (``"valid_loss"``: the run's own
training objective on the valid split: L1 + weight x its MCC, the same variant, g, weight and scale,
and L1 alone when MCC is off; spec 4) or the reference code's rule (``"valid_loss_reference"``: valid
L1 + the code's pretraining-form MCC at the run's g, weight 1 and no s, whatever form the run trains
with and whether or not it does: aoqzhu/KEBR@171de2d main.py:147-166 and 244 next to the fine-tuning
form it trains with, main.py:122-128). All three values are logged every epoch; ties keep the earlier
epoch. At the end that epoch's weights are scored on the test split. ``eval_amp=False`` evaluates in fp32 where training uses bf16 autocast (the
paper's precision); ``kebr predict`` follows the run's setting.

Outputs in ``out_dir``: ``epoch-NNNN/`` states (the newest, the best, ``save_epochs``; written every
``checkpoint_minutes``, the best epoch's weights held in memory until then), ``last`` and ``best``
symlinks, ``log.csv`` (training terms as in pretraining plus ``valid_<metric>`` for every kebr.metrics key), ``metrics.json`` (test metrics of the best epoch + best_epoch, best_valid_mae,
seed, n_test; an undefined metric such as corr of constant predictions is NaN) and
``predictions.csv`` (clip_id, split, prediction, label; one row per test clip). Calling again on
the same ``out_dir`` resumes after the last saved epoch. ``bucket_by_length`` and
``log_every_steps`` as in pretraining. The settings (kebr/train/settings.py ``FinetuneSettings``)
mean what the schema's ``finetune:`` says.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

import numpy as np

from kebr import paths
from kebr.mcc import MCCLoss
from kebr.metrics import regression_metrics
from kebr.model import KEBR, KEBRConfig
from kebr.shards import ShardDataset
from kebr.train.checkpoint import load_weights, read_configs, read_weights, state_name
from kebr.train.data import make_loader
from kebr.train.loop import (
    GROUP_NAMES,
    Objective,
    adam,
    check_shards,
    fit,
    predict,
    setup,
    write_csv,
)
from kebr.train.settings import FinetuneSettings

# Model config fields that may differ between pretraining and fine-tuning; all others must match.
STAGE_SPECIFIC = {"freeze_text", "masked_mean", "dropout"}


def build_finetune_model(model_config: KEBRConfig, pretrained: str | Path | None) -> KEBR:
    """A fresh KEBR (its own new fine-tuning head) with the LM, TCMF and pretraining head of the
    pretraining state directory ``pretrained`` (e.g. what ``pretrain`` returns), if given."""
    model = KEBR(model_config)
    if pretrained is not None:
        stored, _ = read_configs(Path(pretrained))
        # Through KEBRConfig: a key added since that state was saved compares at its default.
        stored, ours = KEBRConfig.from_dict(stored).to_dict(), model_config.to_dict()
        widths, pretrained_widths = (ours["d_audio"], ours["d_video"]), (stored["d_audio"], stored["d_video"])
        if widths != pretrained_widths:  # e.g. an MMSA pickle's features after VoxCeleb's librosa/OpenFace ones
            raise ValueError(
                f"{pretrained} was pretrained on features of width audio {pretrained_widths[0]}, visual "
                f"{pretrained_widths[1]}, but these shards have audio {widths[0]}, visual {widths[1]}: fine-tune "
                "on features extracted like the pretraining corpus's, or without pretraining (variant no_pretrain)")
        differ = sorted(k for k in ours.keys() | stored.keys()
                        if k not in STAGE_SPECIFIC and ours.get(k) != stored.get(k))
        if differ:
            raise ValueError(f"{pretrained} was pretrained with another architecture: {differ} differ")
        model.load_pretrained(read_weights(Path(pretrained)))
    return model


def optimizer_groups(model: KEBR, lr_backbone: float, lr_head: float,
                     lr_fusion: float | None = None) -> list[dict[str, Any]]:
    """Fine-tuning's named Adam groups: ``KEBR.param_groups`` (the LM and TCMF at ``lr_backbone``, the
    heads at ``lr_head``), and with ``lr_fusion`` set, everything of the backbone that is not the LM
    (TCMF) in a group "fusion" of its own at that rate. None keeps TCMF at the LM's rate."""
    backbone, heads = ({**g, "name": name} for name, g in zip(GROUP_NAMES, model.param_groups(lr_backbone, lr_head),
                                                               strict=True))
    if lr_fusion is None:
        return [backbone, heads]
    lm = {id(p) for p in model.text.parameters()}
    fusion = {"name": "fusion", "params": [p for p in backbone["params"] if id(p) not in lm], "lr": lr_fusion}
    backbone["params"] = [p for p in backbone["params"] if id(p) in lm]
    return [backbone, fusion, heads]


def score(predicted: dict[str, np.ndarray], objective: Objective) -> dict[str, float]:
    """kebr.metrics of ``predict``'s output, plus ``loss``: the run's training ``objective`` on those
    predictions (L1 + weight x its MCC, or L1 alone with MCC off): what ``select_by="valid_loss"`` ranks;
    and ``loss_reference``: L1 + the reference code's selection MCC (module docstring), what
    ``"valid_loss_reference"`` ranks. Both are means over clips; the code summed per-batch means, which
    weighs the clips of a smaller last batch more."""
    l1 = float(np.abs(predicted["prediction"].astype(np.float64) - predicted["target"]).mean())
    cosines = [torch.from_numpy(predicted[k]).double() for k in ("cos_a", "cos_v")]
    loss = l1
    if objective.enabled:
        loss += objective.mcc.weight * float(objective.mcc.per_sample(*cosines).mean())
    selection = MCCLoss(g=objective.mcc.g, variant="reference", stage="pretrain")
    return {**regression_metrics(predicted["prediction"], predicted["target"]), "loss": loss,
            "loss_reference": l1 + float(selection.per_sample(*cosines).mean())}


def finetune(
    shard_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    model_config: KEBRConfig,
    pretrained: str | Path | None,
    settings: FinetuneSettings,
    seed: int = 0,
    compile: bool | str = False,
    max_steps_per_epoch: int | None = None,
    save_epochs: Sequence[int] = (),
) -> dict[str, Any]:
    """Fine-tune on the labelled train split, select on valid, and return the test metrics of the
    best epoch (also written to ``metrics.json``). ``seed``: this run's (one of ``settings.seeds``)."""
    out_dir = Path(out_dir)
    # The seed list is the workflow's (one run per seed); a run records its own seed. How often it
    # writes its state is no part of what it trained with (it resumes to the same weights).
    train_config = {"stage": "finetune", "shard_paths": [str(p) for p in shard_paths],
                    "pretrained": None if pretrained is None else str(pretrained),
                    **{k: v for k, v in asdict(settings).items() if k not in ("seeds", "checkpoint_minutes")}, "seed": seed,
                    "compile": compile, "max_steps_per_epoch": max_steps_per_epoch, "save_epochs": list(save_epochs)}
    runtime = setup(settings.device, seed, settings.amp)
    splits = {s: ShardDataset(shard_paths, split=s, labelled=True, stage="finetune", in_memory="auto")
              for s in ("train", "valid", "test")}
    for name, dataset in splits.items():
        check_shards(dataset, model_config, f"labelled {name}")

    model = build_finetune_model(model_config, pretrained).to(runtime.device)
    model.pretrain_head.requires_grad_(False)
    optimizer = adam(optimizer_groups(model, settings.lr_backbone, settings.lr_head, settings.lr_fusion))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.t_max)
    generator = torch.Generator().manual_seed(seed)
    batch_size, num_workers, eval_amp = settings.batch_size, settings.num_workers, settings.eval_amp
    train_loader = make_loader(splits["train"], batch_size, runtime, shuffle=True, num_workers=num_workers,
                               generator=generator, bucket_by_length=settings.bucket_by_length)
    valid_loader, test_loader = (make_loader(splits[s], batch_size, runtime, shuffle=False, num_workers=num_workers)
                                 for s in ("valid", "test"))
    objective = Objective("finetune", settings.mcc, model_config.masked_mean)
    state = fit(out_dir, model=model, train_loader=train_loader, optimizer=optimizer, scheduler=scheduler,
                objective=objective, runtime=runtime,
                epochs=settings.epochs, max_steps_per_epoch=max_steps_per_epoch, compile=compile,
                save_epochs=tuple(save_epochs), model_config=model_config, train_config=train_config,
                generator=generator, evaluate=lambda m: score(predict(m, valid_loader, objective, runtime, eval_amp), objective),
                select_by=settings.select_by.removeprefix("valid_"), log_every_steps=settings.log_every_steps,
                checkpoint_minutes=settings.checkpoint_minutes)

    best = state["extra"]["best_epoch"]
    load_weights(out_dir / state_name(best), model)
    tested = predict(model, test_loader, objective, runtime, eval_amp)
    preds, labels = tested["prediction"], tested["target"]
    metrics = {**regression_metrics(preds, labels), "best_epoch": best, "select_by": settings.select_by,
               "best_valid_mae": state["extra"]["best_valid_mae"],
               "best_valid_loss": state["extra"]["best_valid_loss"], "seed": seed, "n_test": len(labels)}
    if runtime.is_main:
        test = splits["test"]
        write_csv(Path(paths.run_predictions(out_dir)), [
            {"clip_id": test.clip_id(i), "split": "test", "prediction": float(p), "label": float(y)}
            for i, (p, y) in enumerate(zip(preds, labels))])
        metrics_path = Path(paths.run_metrics(out_dir))
        tmp = metrics_path.with_name(metrics_path.name + ".tmp")
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
        os.replace(tmp, metrics_path)
    return metrics
