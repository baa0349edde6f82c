"""Training settings (kebr/train/settings.py): the schema's pretrain/finetune keys and the dataclasses'
fields are the same, the defaults are the schema's, unknown or invalid settings fail loudly, and what
is hashed from them (the training fingerprint, the run record) is what it was before they were
dataclasses, so no existing run retrains or restarts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import kebr.experiments
from kebr.config import SCHEMA_PATH, fingerprint, load_config
from kebr.experiments import run_record, training_fingerprint
from kebr.train.finetune import finetune
from kebr.train.pretrain import pretrain
from kebr.train.settings import STAGE_SETTINGS, FinetuneSettings, MCCSettings, PretrainSettings
from kebr.variants import recipe
from tiny_training import CONFIG, FT_CONFIG

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_every_schema_key_is_a_field_and_every_field_a_schema_key(stage):
    section = yaml.safe_load(SCHEMA_PATH.read_text())["$defs"][stage]["properties"]
    settings = STAGE_SETTINGS[stage]
    assert {f.name for f in dataclasses.fields(settings)} == set(section)
    assert {f.name for f in dataclasses.fields(MCCSettings)} == set(section["mcc"]["properties"])
    # ... and each default is the schema's (lists as tuples).
    defaults = settings()
    for name, spec in section.items():
        if name == "mcc":
            assert dataclasses.asdict(defaults.mcc) == {k: v["default"] for k, v in spec["properties"].items()}
        else:
            default = spec["default"]
            assert getattr(defaults, name) == (tuple(default) if isinstance(default, list) else default), name


def test_from_config_takes_a_resolved_section_and_refuses_unknown_keys():
    section = recipe(load_config(REPO / "config.yaml"), "full", "demo_labelled")["finetune"]
    settings = FinetuneSettings.from_config(section)
    assert settings.as_config() == section  # the dataset's own keys included (config.yaml: epochs 30)
    assert settings.epochs == 30 and settings.seeds == (0, 1, 2, 3, 4)
    # A partial section, mcc included, takes the schema defaults for the rest.
    partial = PretrainSettings.from_config({"epochs": 3, "mcc": {"g": 0.1}})
    assert partial == dataclasses.replace(PretrainSettings(epochs=3), mcc=dataclasses.replace(PretrainSettings().mcc, g=0.1))
    with pytest.raises(ValueError, match=r"unknown finetune settings \['lr'\]"):
        FinetuneSettings.from_config({**section, "lr": 1e-4})
    with pytest.raises(ValueError, match=r"unknown pretrain.mcc settings \['gamma'\]"):
        PretrainSettings.from_config({"mcc": {"gamma": 0.1}})


def test_settings_are_checked_against_the_schema():
    with pytest.raises(ValueError, match="pretrain/epochs: 0 is less than the minimum of 1"):
        PretrainSettings(epochs=0)
    with pytest.raises(ValueError, match="finetune/select_by"):
        FinetuneSettings(select_by="valid_acc")
    with pytest.raises(ValueError, match="finetune/mcc/text_positions"):
        FinetuneSettings.from_config({"mcc": {"text_positions": "some"}})
    with pytest.raises(ValueError, match="lm_cache needs a fixed LM"):
        PretrainSettings(freeze_text=False)  # the default lm_cache float16 needs the LM frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        PretrainSettings().epochs = 3  # type: ignore[misc]


# kebr.config.fingerprint of training_fingerprint and of run_record for config.yaml (the demo config),
# with the LM revision held at {"revision": None} (it depends on the installed LM package, not on the
# settings). Computed with the code before the settings became dataclasses (commit f0e12e9:
# training_fingerprint as it was; run_record(shards=[], None, model={}, {**recipe section, "seed": seed,
# "lm": {"revision": None}}); seed: config.yaml's for pretraining, 3 for fine-tuning). The workflow reruns a
# run whose fingerprint changed and a run whose record changed starts over, so these must not move unless
# a change means them to: they moved once, on purpose, when mcc.sequence and mcc.trains_lm were added
# (2026-12-05: they change what the config's runs learn, and like every new training key they enter every run's).
BEFORE = {
    ("pretrain", "full"): ("43344efcc3f0f55b", "59fb050eea4bd0ed"),
    ("finetune", "full"): ("2b0f3ce2e75e1f3a", "9dc2f615b0ac39a7"),
    ("pretrain", "no_mcc"): ("16d0c13eb18e8a4e", "ca7e0b6cb80a8821"),
    ("finetune", "no_mcc"): ("3a0edc2de8944b60", "930dbc265f0831ef"),
    ("pretrain", "g0.5"): ("43344efcc3f0f55b", "59fb050eea4bd0ed"),
    ("finetune", "g0.5"): ("f55c74d912df721a", "a48229a5f5c8f46f"),
    ("pretrain", "paper-full"): ("b85446f0436fc2b9", "98780529a22355d4"),
    ("finetune", "paper-full"): ("67f5ecf58de79a46", "0d282420cfcb82b8"),
    ("pretrain", "reference-full"): ("a1f08cec99679881", "1440d58e5da2d46c"),
    ("finetune", "reference-full"): ("9d93bf2e5d7729e5", "fec0111b71411c6f"),
    ("pretrain", "paper-bert_base"): ("bfc48a0f2840f098", "98780529a22355d4"),
    ("finetune", "paper-bert_base"): ("57c7076991463cfb", "0d282420cfcb82b8"),
}


def test_training_fingerprints_and_run_records_of_the_demo_config_are_unchanged(monkeypatch):
    lm = {"revision": None}
    monkeypatch.setattr(kebr.experiments, "lm_revision", lambda config, name: lm)
    config = load_config(REPO / "config.yaml")
    now = {}
    for stage, variant in BEFORE:
        dataset = "demo_unlabelled" if stage == "pretrain" else "demo_labelled"
        settings = STAGE_SETTINGS[stage].from_config(recipe(config, variant, dataset)[stage])
        seed = config["seed"] if stage == "pretrain" else 3
        now[stage, variant] = (training_fingerprint(config, stage, variant, dataset),
                               fingerprint(run_record([], None, {}, settings, seed, lm)))
    assert now == BEFORE


def test_the_training_fingerprint_needs_no_torch():
    """The Snakefile computes training fingerprints while it builds the DAG: kebr.train.settings and the
    kebr.train package it lives in load no torch."""
    code = ("import sys; from kebr.config import load_config; from kebr.experiments import training_fingerprint; "
            "training_fingerprint(load_config('config.yaml'), 'finetune', 'full', 'demo_labelled'); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# The train config a state records for the demo config's settings (config.yaml; device cpu; shard_paths
# left out: they name this test's files), hashed with kebr.config.fingerprint. Computed with the code
# before the settings became dataclasses (commit f0e12e9: pretrain()/finetune() called with the keyword
# arguments kebr/experiments.py mapped from the config, fit() intercepted). A state records it and
# _check_resumable (kebr/train/loop.py) compares it, so a different value would stop existing runs resuming
# (moved once on purpose with mcc.sequence and mcc.trains_lm, as BEFORE did).
RECORDED_TRAIN_CONFIG = {
    ("pretrain", "full"): "ce397739d490bd53", ("finetune", "full"): "fff7283fb3840bea",
    ("pretrain", "paper-full"): "4d37e2ea3ab5ba8d", ("finetune", "paper-full"): "d8bb215aba54d3a8",
    ("pretrain", "reference-full"): "48ccbd0d03398cab", ("finetune", "reference-full"): "2439f9aff640cd74",
}


class Intercepted(Exception):
    """fit() was reached: the test has what it wanted (the train config) and trains nothing."""


def test_states_record_the_train_config_they_did_before_settings_objects(train_shards, tmp_path, monkeypatch):
    def intercept(*args, train_config, **kwargs):
        raise Intercepted(train_config)

    monkeypatch.setattr("kebr.train.pretrain.fit", intercept)
    monkeypatch.setattr("kebr.train.finetune.fit", intercept)
    config = load_config(REPO / "config.yaml")
    recorded = {}
    for stage, variant in RECORDED_TRAIN_CONFIG:
        dataset = "demo_unlabelled" if stage == "pretrain" else "demo_labelled"
        settings = STAGE_SETTINGS[stage].from_config(recipe(config, variant, dataset)[stage])
        with pytest.raises(Intercepted) as reached:
            if stage == "pretrain":
                pretrain(train_shards, tmp_path / "pretrain", model_config=CONFIG,
                         settings=dataclasses.replace(settings, device="cpu"), seed=config["seed"],
                         lm_cache_dir=tmp_path / "lm_cache")
            else:
                finetune(train_shards, tmp_path / "finetune", model_config=FT_CONFIG, pretrained=None,
                         settings=dataclasses.replace(settings, device="cpu"), seed=2)
        train_config = {k: v for k, v in reached.value.args[0].items() if k != "shard_paths"}
        recorded[stage, variant] = fingerprint(train_config)
    assert recorded == RECORDED_TRAIN_CONFIG
