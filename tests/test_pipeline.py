"""The feature DAG end to end through Snakemake on real media: every clip accounted for, the shard's
values right, and a killed stage resumes without losing or changing finished work."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from skimage import data

from kebr.democorpus import write_dirty_clips
from kebr.journal import read_stage_output
from kebr.masking import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

EXPECTED = {  # clip -> a fragment of its skip reason ("" = ok)
    "c1": "",
    "c2": "no face detected",
    "c3": "empty transcript",
    "c4": "no audio stream",
    "c5": "zero-byte file",
    "c6": "not a readable media file",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    media = root / "corpus with spaces ü"
    kinds = write_dirty_clips(media, data.astronaut()[0:300, 75:375].astype(np.float32),
                              np.random.default_rng(0))
    assert list(kinds)[:6] == [f"0000{i}.mp4" for i in range(1, 7)]
    with (media / "clips.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "video", "speaker"])
        for i in range(1, 7):
            writer.writerow([f"c{i}", f"0000{i}.mp4", f"spk{i % 3}"])
    (root / "config.yaml").write_text(
        "results: out\nshard_size: 4\n"
        f"datasets:\n  tiny: {{layout: manifest, manifest: '{media / 'clips.csv'}'}}\n")
    return root


@pytest.fixture(scope="module")
def run(corpus):
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml",
         "--cores", "2", "features_tiny"], cwd=corpus, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return corpus / "out" / "tiny"


def test_every_clip_is_in_clips_tsv_with_its_reason(run):
    with (run / "clips.tsv").open() as f:
        rows = {r["clip_id"]: r for r in csv.DictReader(f, delimiter="\t")}
    assert set(rows) == set(EXPECTED)
    for clip_id, fragment in EXPECTED.items():
        if fragment:
            assert rows[clip_id]["status"] == "skipped" and fragment in rows[clip_id]["reason"], rows[clip_id]
        else:
            assert rows[clip_id]["status"] == "ok" and rows[clip_id]["reason"] == ""
    assert {r["shard"] for r in rows.values()} == {"00000", "00001"}


def test_shard_holds_the_good_clip_with_real_values(run):
    with h5py.File(run / "shards" / "00000.h5") as f:
        assert list(f["id"].asstr()) == ["c1"]
        assert "fine" in f["text/raw"].asstr()[0].lower()
        # the masked word is the transcript's strongest VADER word, and the mask token sits at mask_index
        assert f["text/word"].asstr()[0].lower().strip(",.") in {"fine", "good", "perfectly"}
        tokenizer = load_tokenizer("bundled")
        assert f["text/input_ids"][0, f["text/mask_index"][0]] == tokenizer.mask_token_id
        assert f["text/mask_label"][0] > 0
        n_audio = f["audio/lengths"][0]
        assert 100 < n_audio <= 400  # about 3 s at 22,050 Hz / 512
        assert np.all(f["audio/features"][0, n_audio:] == 0) and np.abs(f["audio/features"][0, :n_audio]).sum() > 0
        columns = __import__("json").loads(f["visual"].attrs["columns"])
        present = f["visual/features"][0, : f["visual/lengths"][0], columns.index("face_present")]
        assert present.min() == 1.0
        assert f.attrs["schema_version"] >= 1 and "librosa" in f.attrs["library_versions"]


def test_killed_stage_resumes_with_identical_output(run, corpus, tmp_path):
    plan = run / "plan" / "00000.tsv"
    config = corpus / "config.yaml"
    cmd = [sys.executable, "-m", "kebr", "visual", "--config", str(config), "--plan", str(plan)]
    clean = tmp_path / "clean.jsonl"
    subprocess.run(cmd + ["--out", str(clean)], cwd=corpus, env=ENV, check=True, capture_output=True)

    killed = tmp_path / "killed.jsonl"
    journal = killed.with_name(killed.name + ".journal")
    proc = subprocess.Popen(cmd + ["--out", str(killed)], cwd=corpus, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (journal.exists() and journal.read_text().count("\n") >= 1):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not killed.exists() and journal.exists()
    done_before = journal.read_text().count("\n")
    assert 1 <= done_before < 4
    subprocess.run(cmd + ["--out", str(killed)], cwd=corpus, env=ENV, check=True, capture_output=True)
    assert read_stage_output(killed) == read_stage_output(clean)
    assert not journal.exists()
