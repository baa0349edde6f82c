"""The config: one validated file per distinct config, errors that say where, names safe in paths and
shells, typed per-dataset overrides, and fingerprints that change exactly with the keys a stage reads."""

import copy
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kebr.config import load_config, validate_config, write_resolved_config
from kebr.fingerprints import features_fingerprint, stage_fingerprint
from kebr.experiments import training_fingerprint
from kebr.variants import recipe

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
DATASETS = {"vox": {"layout": "voxceleb2", "root": "/v"},
            "mosi": {"layout": "mmsa_raw", "root": "/m", "pretrained_on": "vox", "finetune": {"epochs": 3}}}


def config(**changes):
    return validate_config({"datasets": copy.deepcopy(DATASETS), **copy.deepcopy(changes)})


def test_resolved_config_is_content_addressed_and_never_rewritten(tmp_path):
    first = write_resolved_config(config(), tmp_path)
    assert first.parent == tmp_path / "config" and load_config(first) == config()
    before = first.stat()
    # The same config (a dry run, a second Snakemake, a cluster job's parse) finds its file as it was.
    assert write_resolved_config(config(), tmp_path) == first
    # An edited config gets its own file; the one a running job reads is untouched.
    edited = write_resolved_config(config(visual={"fps": 5.0}), tmp_path)
    assert edited != first and load_config(edited)["visual"]["fps"] == 5.0
    after = first.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # Concurrent writers of a new config all get one whole file and leave no temporary behind.
    with ThreadPoolExecutor(8) as pool:
        paths = set(pool.map(lambda _: write_resolved_config(config(seed=7), tmp_path), range(16)))
    assert len(paths) == 1 and load_config(paths.pop())["seed"] == 7
    assert len(list((tmp_path / "config").iterdir())) == 3


def test_config_validation_fills_defaults_and_names_bad_keys():
    resolved = validate_config({"datasets": {"x": {"layout": "manifest", "manifest": "m.csv"}}})
    assert resolved["shard_size"] == 1000 and resolved["visual"]["max_frames"] == 55
    assert resolved["audio"]["feature_sets"] == ["librosa33"] and resolved["datasets"]["x"]["demo"] is False
    with pytest.raises(ValueError, match="visual/backend"):
        validate_config({"visual": {"backend": "openface"}})
    with pytest.raises(ValueError, match="needs `root`"):
        validate_config({"datasets": {"v": {"layout": "voxceleb2"}}})


def test_names_and_overrides_are_checked():
    for name in ("a b;cmd", "../x", "x/y", "", "mosi-2", "none", "pretrain", "logs"):
        with pytest.raises(ValueError, match="does not match|should not be valid"):
            validate_config({"datasets": {name: {"layout": "manifest", "manifest": "m.csv"}}})
    with pytest.raises(ValueError, match="paper_datasets/mosi: 'a b' does not match"):
        validate_config({"paper_datasets": {"mosi": "a b"}})
    with pytest.raises(ValueError, match="datasets/mosi/pretrained_on: 'vox2' is not one of the datasets"):
        validate_config({"datasets": {**DATASETS, "mosi": {**DATASETS["mosi"], "pretrained_on": "vox2"}}})
    # A dataset's pretrain:/finetune: keys have the top-level types; a typo or a wrong type is an error.
    for override, message in (({"finetune": {"epoch": 3}}, "'epoch' was unexpected"),
                              ({"finetune": {"epochs": "3"}}, "finetune/epochs: '3' is not of type 'integer'"),
                              ({"pretrain": {"mcc": {"g": "big"}}}, "pretrain/mcc/g: 'big' is not of type 'number'"),
                              ({"finetune": {"seeds": []}}, "finetune/seeds: [] should be non-empty")):
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            validate_config({"datasets": {"x": {"layout": "manifest", "manifest": "m.csv", **override}}})
    # Overrides get no defaults of their own: unset keys, nested ones included, come from the top level.
    c = config(finetune={"seeds": [4], "mcc": {"g": 0.3}},
               datasets={**DATASETS, "mosi": {**DATASETS["mosi"], "finetune": {"epochs": 3, "mcc": {"weight": 0.5}}}})
    assert c["datasets"]["mosi"]["finetune"] == {"epochs": 3, "mcc": {"weight": 0.5}}
    mosi = recipe(c, "full", "mosi")["finetune"]
    assert (mosi["epochs"], mosi["seeds"], mosi["mcc"]) == (3, [4], {"enabled": True, "variant": "paper", "g": 0.3,
                                                                     "weight": 0.5, "scale": 1.0,
                                                                     "text_positions": "real", "sequence": "tcmf", "trains_lm": False})


def test_yaml_syntax_error_is_one_line_naming_file_line_and_column(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("results: out\ndatasets:\n  a: {layout: manifest, manifest: x.csv\n  b: 1\n")
    expected = "config.yaml:4:4: YAML syntax error: while parsing a flow mapping: expected ',' or '}', but got ':'"
    with pytest.raises(ValueError) as error:
        load_config(bad)
    assert str(error.value) == f"{bad.parent}/{expected}"
    cli = subprocess.run([sys.executable, "-m", "kebr", "config-check", "config.yaml"], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True)
    # The error is one line; the CLI's second line points at the command's help.
    assert cli.returncode == 2 and cli.stderr.splitlines()[0] == f"kebr config-check: error: {expected}"
    snakemake = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n"], cwd=tmp_path,
                               env=ENV, capture_output=True, text=True)
    assert snakemake.returncode == 1 and snakemake.stderr.strip().splitlines() == [expected]


def test_stage_fingerprints_change_with_exactly_the_keys_a_stage_reads():
    base = config()
    stages = ("plan", "asr", "audio", "visual", "assemble")

    def changed(other):
        return {s for s in stages if stage_fingerprint(other, s, "vox") != stage_fingerprint(base, s, "vox")}

    assert changed(config(visual={"backend": "openface_csv"})) == {"visual"}
    assert changed(config(audio={"max_frames": 300})) == {"audio", "assemble"}
    assert changed(config(shard_size=10)) == {"plan"}
    assert changed(config(seed=1)) == {"plan", "assemble"}
    assert changed(config(finetune={"epochs": 3}, model={"d_embed": 8}, results="elsewhere")) == set()
    assert changed(config(datasets={**DATASETS, "mosi": {"layout": "mmsa_raw", "root": "/other"}})) == set()
    assert features_fingerprint(config(visual={"fps": 5.0}), "vox") != features_fingerprint(base, "vox")

    def runs(other):
        return {(stage, d) for stage, d in (("pretrain", "vox"), ("finetune", "mosi"))
                if training_fingerprint(other, stage, "full", d) != training_fingerprint(base, stage, "full", d)}

    # Seeds, devices, workers and kept states change no result; a learning rate changes its stage only.
    assert runs(config(finetune={"seeds": [0, 1, 2, 3, 4, 5], "device": "cpu", "num_workers": 0},
                       pretrain={"device": "cuda", "num_workers": 1, "save_epochs": [1]})) == set()
    assert runs(config(finetune={"lr_head": 1e-3})) == {("finetune", "mosi")}
    assert runs(config(pretrain={"epochs": 3})) == {("pretrain", "vox")}
    assert runs(config(model={"masked_mean": False})) == {("finetune", "mosi")}  # pooling is fine-tuning's
    assert runs(config(text={"model": "bert-base-uncased"})) == {("pretrain", "vox"), ("finetune", "mosi")}
    assert training_fingerprint(base, "finetune", "g0.5", "mosi") != training_fingerprint(base, "finetune", "full", "mosi")
