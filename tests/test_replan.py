"""`snakemake features_<dataset> --forcerun plan` after a corpus changed reruns exactly the shards whose
clips were edited, replaced in place, added or removed, through the real workflow (one clip a shard)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kebr.media import write_clip
from kebr.stages.assemble import read_status

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
ENV.pop("KEBR_TEST_FAULTS", None)
CONFIG = "results: out\nshard_size: 1\ndatasets:\n  tiny: {layout: manifest, manifest: corpus/clips.csv}\n"
PER_SHARD = ("asr", "audio", "visual", "shards", "status")


def clip(path: Path, hz: float) -> None:
    """A 2 s clip: noise frames (no face) and a tone (the audio stage's features depend on ``hz``)."""
    frames = np.random.default_rng(int(hz)).integers(0, 255, (20, 64, 64, 3), dtype=np.uint8)
    write_clip(path, frames, 10.0, 0.3 * np.sin(2 * np.pi * hz * np.arange(32000) / 16000), 16000)


def manifest(root: Path, rows: dict[str, str]) -> None:
    (root / "corpus" / "clips.csv").write_text(
        "clip_id,video,text\n" + "".join(f"{cid},{cid}.mp4,{text}\n" for cid, text in rows.items()))


def features(root: Path, *extra: str) -> None:
    # the target before --forcerun, which takes every name after it as a rule
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2",
                             "features_tiny", *extra], cwd=root, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


def stamps(root: Path) -> dict[tuple[str, str], int]:
    """(per-shard output folder, shard) -> the output's mtime: which jobs ran."""
    out = root / "out" / "tiny"
    return {(sub, p.stem): p.stat().st_mtime_ns for sub in PER_SHARD for p in (out / sub).glob("0*")}


def rerun_shards(before: dict, after: dict) -> set[str]:
    changed = {key for key in after if before.get(key) != after[key]}
    assert {sub for sub, _ in changed} <= set(PER_SHARD)
    shards = {shard for _, shard in changed}
    assert changed == {(sub, s) for sub in PER_SHARD for s in shards}, changed  # every stage of those shards
    return shards


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("replan")
    (root / "corpus").mkdir()
    for cid, hz in (("a", 220), ("b", 330), ("c", 440), ("d", 550)):
        clip(root / "corpus" / f"{cid}.mp4", hz)
    manifest(root, {"a": "a fine day", "b": "a good film", "c": "a bad plan"})
    (root / "config.yaml").write_text(CONFIG)
    features(root)
    return root


def test_a_replan_reruns_exactly_the_shards_whose_clips_changed(built):
    root = built
    first = stamps(root)
    assert sorted({s for _, s in first}) == ["00000", "00001", "00002"]
    features(root, "--forcerun", "plan")  # nothing changed: the plan is rewritten, no shard reruns
    assert rerun_shards(first, stamps(root)) == set()
    # a's transcript corrected; b's file replaced in place under the same name (a longer tone file)
    manifest(root, {"a": "a fine day indeed", "b": "a good film", "c": "a bad plan"})
    clip(root / "corpus" / "b.mp4", 660)
    edited = stamps(root)
    features(root, "--forcerun", "plan")
    assert rerun_shards(edited, stamps(root)) == {"00000", "00001"}
    # a clip added after all others: a new last shard, nothing else
    added = stamps(root)
    manifest(root, {"a": "a fine day indeed", "b": "a good film", "c": "a bad plan", "d": "a new clip"})
    features(root, "--forcerun", "plan")
    assert rerun_shards(added, stamps(root)) == {"00003"}
    # and removed again: no shard reruns, clips.tsv lists the three clips
    removed = stamps(root)
    manifest(root, {"a": "a fine day indeed", "b": "a good film", "c": "a bad plan"})
    features(root, "--forcerun", "plan")
    assert rerun_shards(removed, stamps(root)) == set()
    assert [r["clip_id"] for r in read_status(root / "out" / "tiny" / "clips.tsv")] == ["a", "b", "c"]
