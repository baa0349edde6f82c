"""Training and finding the runs of the paper's experiments (kebr/variants.py has the variants,
tables and the paper's numbers as data).

What a run depends on. ``training_fingerprint`` hashes the recipe keys that change what a run
learns (not the seed list, device, loader workers or which states are kept); the workflow passes it
as a rule param, so an edit reruns exactly the runs it changes. Training reads the shards its
dataset's plan lists and refuses one built with other feature settings. Each run directory records
what it was trained on (``trained_on.json``: shards, pretrained state, recipe); a run whose record
differs starts over instead of resuming someone else's states.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from kebr import paths
from kebr.config import fingerprint
from kebr.fingerprints import features_fingerprint
from kebr.model_cache import model_revision, text_model
from kebr.train.settings import STAGE_SETTINGS, FinetuneSettings, PretrainSettings
from kebr.variants import pretraining_source, recipe, table_rows

log = logging.getLogger("kebr")

# Recipe keys that do not change what a run learns: each seed is its own run (a wildcard), the
# device and loader workers change speed only, save_epochs only which states are kept,
# checkpoint_minutes only how often one is written (a resume gives the same weights) and
# log_every_steps only how often progress is logged.
NON_RESULT_KEYS = frozenset({"seeds", "device", "num_workers", "save_epochs", "checkpoint_minutes",
                             "log_every_steps"})
# Model keys only fine-tuning reads (pooling over tokens): editing them leaves pretraining valid.
FINETUNE_ONLY_MODEL_KEYS = frozenset({"masked_mean"})


def training_fingerprint(config: dict[str, Any], stage: str, variant: str, dataset: str) -> str:
    """The fingerprint of what a ``stage`` ("pretrain" | "finetune") run of ``variant`` on ``dataset``
    learns from the config: model, the stage's recipe without NON_RESULT_KEYS, (pretraining) the
    global seed, and the resolved revision of its LM (kebr/model_cache.py: a refetched or upgraded LM reruns
    the runs that load it). Its shards and pretrained state are the run's inputs, so they are not in it."""
    if stage not in ("pretrain", "finetune"):
        raise ValueError(f"unknown training stage {stage!r}")
    full = recipe(config, variant, dataset)
    settings = STAGE_SETTINGS[stage].from_config(full[stage]).as_config()
    skip = FINETUNE_ONLY_MODEL_KEYS if stage == "pretrain" else frozenset()
    values = {"model": {k: v for k, v in full["model"].items() if k not in skip},
              stage: {k: v for k, v in settings.items() if k not in NON_RESULT_KEYS},
              "lm": lm_revision(config, full["model"]["text_model"])}
    if stage == "pretrain":
        values["seed"] = config["seed"]
    return fingerprint(values)


def lm_revision(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The resolved revision of the LM ``name`` (kebr/model_cache.py ``model_revision``)."""
    return model_revision(config, text_model(name))


def shard_paths(config: dict[str, Any], dataset: str) -> list[Path]:
    """The dataset's shards as its plan lists them (leftovers of an earlier plan are never read),
    each checked to carry this config's ``features_fingerprint``."""
    from kebr.shards import read_attrs  # torch: the Snakefile imports this module

    if dataset not in config["datasets"]:
        raise KeyError(f"dataset {dataset!r} is not in config datasets: {sorted(config['datasets'])}")
    names = paths.planned_shards(config["results"], dataset)
    if not names:
        raise ValueError(f"no plan for dataset {dataset!r} in {paths.plan_dir(config['results'], dataset)}: "
                         f"run `snakemake features_{dataset}` first")
    expected = features_fingerprint(config, dataset)
    shards = [Path(paths.shard(config["results"], dataset, name)) for name in names]
    for path in shards:
        if not path.is_file():
            raise ValueError(f"shard {path} is missing: run `snakemake features_{dataset}` first")
        found = read_attrs(path).get("fingerprint")
        if found != expected:
            raise ValueError(f"shard {path} was built with other feature settings (fingerprint {found}, this "
                             f"config's {expected}): run `snakemake features_{dataset}` to rebuild it")
    return shards


RUN_RECORD = "trained_on.json"
# What a run writes into its directory besides its states (epoch-*, .tmp-*): cleared on a restart.
RUN_FILES = ("last", "best", "log.csv", "tensorboard", "final.json", "metrics.json", "predictions.csv",
             "feature_config.json", RUN_RECORD)


def _file_identity(path: Path) -> list[Any]:
    """Name, size and modification time: a rebuilt file (shard, pretrained state) looks different."""
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def run_record(shards: list[Path], pretrained_state: Path | None, model: dict[str, Any],
               settings: PretrainSettings | FinetuneSettings, seed: int, lm: dict[str, Any]) -> dict[str, Any]:
    """What a run is trained on: each shard (identity and feature fingerprint), the pretrained state's
    weights, the model config, the training settings a resume may not change, the run's seed and its
    LM's revision (``lm_revision``: states trained with another version of the LM are not resumed)."""
    from kebr.shards import read_attrs  # torch: the Snakefile imports this module
    from kebr.train.checkpoint import WEIGHTS  # torch: the Snakefile imports this module

    kept = {k: v for k, v in settings.as_config().items() if k not in ("epochs", *NON_RESULT_KEYS)}
    record = {"shards": [_file_identity(p) + [read_attrs(p).get("fingerprint")] for p in shards],
              "pretrained": None if pretrained_state is None else _file_identity(pretrained_state / WEIGHTS),
              "model": model, "settings": {**kept, "seed": seed, "lm": lm}}
    return json.loads(json.dumps(record))  # as read back from disk: tuples become lists


def _clear_run(out_dir: Path) -> None:
    """Delete what a run wrote (nothing else). Tolerant of a second process (a DDP rank) doing the same."""
    from kebr.train.checkpoint import PREFIX, TMP_PREFIX  # torch: the Snakefile imports this module

    for entry in out_dir.iterdir() if out_dir.is_dir() else ():
        if entry.name.startswith((PREFIX, TMP_PREFIX)) or entry.name in RUN_FILES:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def prepare_run_dir(out_dir: Path, record: dict[str, Any], epochs: int) -> None:
    """Keep ``out_dir``'s states for a resume only if they were trained on exactly ``record`` and
    none is past ``epochs``; otherwise the run starts over. Then write the record."""
    from kebr.train.checkpoint import saved_epochs  # torch: the Snakefile imports this module

    path = out_dir / RUN_RECORD
    stored = json.loads(path.read_text()) if path.is_file() else None
    states = saved_epochs(out_dir)
    if stored != record or (states and states[-1] > epochs):
        if states:
            why = "its shards, pretrained state or recipe changed" if stored != record else f"it is past {epochs} epochs"
            log.info("%s: starting over, not resuming (%s)", out_dir, why)
        _clear_run(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # every DDP rank writes the same record
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def model_config(config: dict[str, Any], variant: str, shards: list[Path], freeze_text: bool):
    """KEBRConfig of a variant, feature widths read from the shards."""
    from kebr.model import KEBRConfig  # torch: the Snakefile imports this module
    from kebr.shards import read_attrs  # torch: the Snakefile imports this module

    attrs = read_attrs(shards[0])
    return KEBRConfig(d_audio=len(attrs["audio_columns"]), d_video=len(attrs["visual_columns"]),
                      freeze_text=freeze_text, **recipe(config, variant)["model"])


def run_pretraining(config: dict[str, Any], dataset: str, variant: str, out_dir: Path,
                    until_epoch: int | None = None) -> Path:
    """Pretrain on ``dataset`` with a variant's recipe; writes ``out_dir/final.json`` naming the
    final state and returns that state's directory. Resumes a killed run of the same inputs; starts
    over when the shards or the recipe changed since ``out_dir`` was trained.

    ``until_epoch``: one job of a chain (kebr/resources.py ``pretrain_chain``) stops after that
    epoch and writes ``until-epoch<N>.json`` instead; the next job resumes from its state, and the
    weights equal an uninterrupted run's (kebr/train/loop.py)."""
    from kebr.train.pretrain import pretrain  # torch: the Snakefile imports this module

    settings = PretrainSettings.from_config(recipe(config, variant, dataset)["pretrain"])
    if until_epoch is not None and not 1 <= until_epoch < settings.epochs:
        raise ValueError(f"--until-epoch {until_epoch}: must be between 1 and the run's last epoch "
                         f"{settings.epochs} (exclusive)")
    shards = shard_paths(config, dataset)
    kebr_config = model_config(config, variant, shards, settings.freeze_text)
    lm = lm_revision(config, kebr_config.text_model)
    prepare_run_dir(out_dir, run_record(shards, None, kebr_config.to_dict(), settings, config["seed"], lm),
                    settings.epochs)
    final = pretrain(shards, out_dir, model_config=kebr_config,
                     settings=settings if until_epoch is None else replace(settings, epochs=until_epoch),
                     seed=config["seed"], lm_cache_dir=Path(paths.lm_cache_dir(config["results"], dataset)))
    Path(paths.pretrain_marker(out_dir, until_epoch)).write_text(json.dumps({"state": final.name}) + "\n")
    return final


def run_finetuning(config: dict[str, Any], dataset: str, pretrained: Path | None, variant: str, seed: int,
                   out_dir: Path) -> dict[str, Any]:
    """Fine-tune one seed; ``pretrained`` is a pretraining run directory (its final.json) or None.

    Writes metrics.json and predictions.csv (kebr/train/finetune.py) and feature_config.json, the
    feature settings of the shards, so ``kebr predict`` extracts new clips the same way."""
    from kebr.shards import read_attrs  # torch: the Snakefile imports this module
    from kebr.train.finetune import finetune  # torch: the Snakefile imports this module
    from kebr.train.checkpoint import link, prune  # torch: the Snakefile imports this module

    if (out_dir / "feature_config.json").exists():  # a finished run asked for again starts over: its pruned states cannot resume
        _clear_run(out_dir)
    settings = FinetuneSettings.from_config(recipe(config, variant, dataset)["finetune"])
    shards = shard_paths(config, dataset)
    state = None
    if pretrained is not None:
        state = pretrained / json.loads(Path(paths.pretrain_marker(pretrained)).read_text())["state"]
    kebr_config = model_config(config, variant, shards, freeze_text=False)
    lm = lm_revision(config, kebr_config.text_model)
    prepare_run_dir(out_dir, run_record(shards, state, kebr_config.to_dict(), settings, seed, lm), settings.epochs)
    metrics = finetune(shards, out_dir, model_config=kebr_config, pretrained=state, settings=settings, seed=seed)
    # A finished run needs only its best state (for `kebr predict`); the rest were for resuming.
    prune(out_dir, keep=[metrics["best_epoch"]])
    link(out_dir, "last", metrics["best_epoch"])
    (out_dir / "feature_config.json").write_text(read_attrs(shards[0])["feature_config"] + "\n")
    return metrics


def table_runs(name: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    """``table_rows`` with each row's metrics.json paths over the configured seeds (variants without
    pretraining live under ``none``)."""
    rows = table_rows(name, config)
    for row in rows:
        pretrained = pretraining_source(row["pretrain"], row["variant"])
        row["metrics_files"] = [
            Path(paths.finetune_metrics(config["results"], row["finetune"], pretrained, row["variant"], seed))
            for seed in recipe(config, row["variant"], row["finetune"])["finetune"]["seeds"]]
    return rows
