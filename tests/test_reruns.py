"""Config edits rerun exactly what they change, and training uses exactly what its plan and config say.

The dry runs read a hard-linked copy of the session's small demo run (`demo_run`), so they see its
Snakemake records and outputs without being able to change them."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import planned_jobs
from kebr.config import load_config
from kebr.experiments import run_pretraining



@pytest.fixture(scope="module")
def demo(demo_run, tmp_path_factory):
    copy = tmp_path_factory.mktemp("reruns") / "demo"
    shutil.copytree(demo_run, copy, symlinks=True, copy_function=os.link)
    return copy


def planned(root: Path, edit: str, target: str = "out/tables/demo.md") -> dict[str, int]:
    """Jobs per rule that `snakemake -n <target>` plans with `edit` (YAML) merged over config.yaml. The
    default target is the demo's table: what training and the features rerun, without the figures."""
    edit_file = root.parent / "edit.yaml"
    edit_file.write_text(edit)
    return planned_jobs(root, [target, "--configfile", str(edit_file)])


def test_edits_that_change_no_result_rerun_nothing(demo):
    configs = sorted((demo / "out" / "config").iterdir())
    stamps = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in configs]
    edit = ("finetune: {num_workers: 3, device: cpu, checkpoint_minutes: 0}\n"
            "pretrain: {save_epochs: [2], checkpoint_minutes: 1}\nresources: {threads: {finetune: 1, pretrain: 1}}\n")
    assert planned(demo, edit) == {}
    # The demo target's figures: only the page that shows the whole config is redrawn.
    assert planned(demo, edit, target="demo") == {"plot_config": 1, "demo": 1}
    # The dry run wrote its config beside the others and changed none of them.
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in configs] == stamps
    assert len(list((demo / "out" / "config").iterdir())) == len(configs) + 1


def test_a_visual_edit_reruns_visual_assemble_and_what_follows(demo):
    # One shard per demo corpus; fine-tuning: 2 seeds x (full, no_pretrain, text_only).
    assert planned(demo, "visual: {fps: 5.0}\n") == {
        "visual_features": 2, "assemble_shard": 2, "clips_report": 2, "pretrain": 1, "finetune": 6, "table": 1}


def test_new_seeds_run_alone(demo):
    assert planned(demo, "datasets: {demo_labelled: {finetune: {seeds: [0, 1, 2]}}}\n") == {
        "finetune": 3, "table": 1}


def test_a_training_edit_reruns_no_feature_job(demo):
    # Pretraining and the fine-tuning runs that start from it; no_pretrain's and text_only's runs stay.
    assert planned(demo, "datasets: {demo_unlabelled: {pretrain: {epochs: 3}}}\n") == {
        "pretrain": 1, "finetune": 2, "table": 1}


def test_pretraining_resumes_only_the_inputs_it_was_trained_on(demo_run, tmp_path):
    config = load_config(demo_run / "config.yaml")
    config["results"] = str(tmp_path / "out")
    config["datasets"]["demo_unlabelled"]["pretrain"]["epochs"] = 1
    shards = tmp_path / "out" / "demo_unlabelled" / "shards"
    for part in ("plan", "shards"):
        shutil.copytree(demo_run / "out" / "demo_unlabelled" / part, tmp_path / "out" / "demo_unlabelled" / part)
    shutil.copy(shards / "00000.h5", shards / "00001.h5")  # a leftover of an earlier plan: never read

    run = tmp_path / "run"
    assert run_pretraining(config, "demo_unlabelled", "full", run) == run / "epoch-0001"
    record = json.loads((run / "trained_on.json").read_text())
    assert [s[0] for s in record["shards"]] == ["00000.h5"]
    weights = run / "epoch-0001" / "model.safetensors"
    trained, stamp = load_file(weights), weights.stat().st_mtime_ns
    # Asked again for the same inputs: the finished run stands, nothing retrains.
    run_pretraining(config, "demo_unlabelled", "full", run)
    assert weights.stat().st_mtime_ns == stamp
    # Its shard rebuilt (here: rewritten with the same bytes): the run starts over instead of reporting
    # the old model, and CPU training is deterministic, so it learns the same weights again.
    os.replace(shutil.copy(shards / "00000.h5", shards / "rebuilt.tmp"), shards / "00000.h5")
    run_pretraining(config, "demo_unlabelled", "full", run)
    assert weights.stat().st_mtime_ns != stamp
    again = load_file(weights)
    assert again.keys() == trained.keys() and all(torch.equal(again[k], trained[k]) for k in trained)
    assert len((run / "log.csv").read_text().splitlines()) == 2
    # A config whose feature settings differ from the shards' is refused, naming the shard.
    config["visual"]["fps"] = 5.0
    with pytest.raises(ValueError, match=f"shard {shards / '00000.h5'} was built with other feature settings"):
        run_pretraining(config, "demo_unlabelled", "full", run)
