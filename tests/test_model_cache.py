"""The model cache (kebr/model_cache.py): bundled defaults and local paths need no fetch and touch no
network; a hub model is loaded from the cache with the hub switched off; a hub model missing from
the cache stops a job with a message saying how to fetch it. (Fetching from a hub is not tested:
these machines reach no model hub.)"""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import ENV, REPO
from kebr.config import validate_config
from kebr.masking import bundled_text_model_path
from kebr.model_cache import LOCK, ModelNotCached, check_cached, fetch_models, required_models, use_cache


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network use in a test that must run offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)


def config_with(tmp_path, **sections):
    return validate_config({"results": str(tmp_path / "out"), "models": {"dir": str(tmp_path / "models")}, **sections})


def test_bundled_defaults_need_no_fetch(tmp_path, no_network, clean_env):
    config = config_with(tmp_path)
    assert [(m.kind, m.source) for m in required_models(config)] == [
        ("asr", "bundled"), ("langid", "bundled"), ("text", "bundled")]
    check_cached(config, ("asr", "langid", "text"))
    lock = fetch_models(config)
    assert lock["text:bundled"]["path"] == str(bundled_text_model_path())
    assert lock["asr:bundled"]["source"] == "bundled" and lock["asr:bundled"]["revision"] is None
    assert json.loads((tmp_path / "models" / LOCK).read_text()) == lock


def test_local_path_needs_no_fetch(tmp_path, no_network, clean_env):
    config = config_with(tmp_path, text={"model": str(bundled_text_model_path())})
    assert required_models(config)[2].source == "local"
    check_cached(config, ("text",))


def test_cached_hub_model_loads_offline(tmp_path, no_network, clean_env, monkeypatch):
    """A hub name resolves from the cache's pinned snapshot with HF_HUB_OFFLINE set (what every
    job does), here a cache laid out by hand as `kebr fetch-models` leaves it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models" / "hub" / "models--kebr-test--minilm"
    shutil.copytree(bundled_text_model_path(), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    config = config_with(tmp_path, text={"model": "kebr-test/minilm"})
    use_cache(config)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    check_cached(config, ("text",))
    script = ("from kebr.masking import load_tokenizer; "
              "print(load_tokenizer('kebr-test/minilm')('happy days')['input_ids'])")
    result = subprocess.run([sys.executable, "-c", script], env={**ENV, **os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[101, 3407, 2420, 102]"


def test_uncached_hub_model_stops_a_job_with_the_fix(tmp_path, clean_env):
    config = config_with(tmp_path, text={"model": "bert-large-uncased"})
    with pytest.raises(ModelNotCached, match="run `snakemake models`"):
        check_cached(config, ("text",))
    check_cached(config, ("asr",))  # the ASR model is the bundled one
    (tmp_path / "c.yaml").write_text(f"results: out\nmodels: {{dir: {tmp_path / 'models'}}}\n"
                                     "text: {model: bert-large-uncased}\n"
                                     "datasets: {d: {layout: manifest, manifest: m.csv}}\n")
    result = subprocess.run([sys.executable, "-m", "kebr", "pretrain", "--config", "c.yaml", "--dataset", "d",
                             "--out", "run"], cwd=tmp_path, env={**ENV, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "text model 'bert-large-uncased' is not in the model cache" in result.stderr
    assert "run `snakemake models` (or `kebr fetch-models`) on a machine with network" in result.stderr


def test_models_rule_writes_the_lock(tmp_path):
    (tmp_path / "config.yaml").write_text(f"results: out\nmodels: {{dir: {tmp_path / 'cache'}}}\n")
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "1", "models"],
                            cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    lock = json.loads((tmp_path / "cache" / LOCK).read_text())
    assert sorted(lock) == ["asr:bundled", "langid:bundled-base", "text:bundled"]
