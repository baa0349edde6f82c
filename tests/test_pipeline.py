"""The feature DAG end to end through Snakemake on real media: every clip accounted for, the shard's
values right, labelled test clips kept whole, and every stage killed at a random point reruns to
exactly the output of an uninterrupted run."""

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from skimage import data

from kebr.clips import SkipKind
from kebr.demo.corpus import write_dirty_clips
from kebr.journal import Journal, read_stage_output
from kebr.masking import load_tokenizer
from kebr.shards import ShardDataset

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
ENV.pop("KEBR_TEST_FAULTS", None)

EXPECTED = {  # clip -> (status, kind, a fragment of its reason, missing modality)
    "c1": ("ok", "", "", ""),
    "c2": ("skipped", "no_face", "no face detected", ""),
    "c3": ("skipped", "no_speech", "no speech (signal", ""),  # digital silence: below the filter's -60 dBFS
    "c4": ("skipped", "no_audio_stream", "no audio stream", ""),
    "c5": ("skipped", "zero_byte", "zero-byte file", ""),
    "c6": ("skipped", "unreadable", "not a readable media file", ""),
    # labelled test clips with their gold transcripts stay, whatever they lack
    "c7": ("ok", "no_face", "no face detected", "visual"),
    "c8": ("ok", "no_audio_stream", "no audio stream", "audio"),
    "c9": ("ok", "zero_byte", "zero-byte file", "audio,visual"),
}
LABELLED = {  # clip -> (media file, gold text, label)
    "c7": ("00002.mp4", "I bought a coffee and it was awful.", -2.0),
    "c8": ("00004.mp4", "A silent film, and a great one.", 2.0),
    "c9": ("00005.mp4", "Nothing to see or hear here.", 0.0),
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
        writer.writerow(["clip_id", "video", "speaker", "split", "text", "label"])
        for i in range(1, 7):
            writer.writerow([f"c{i}", f"0000{i}.mp4", f"spk{i % 3}", "train", "", ""])
        for clip_id, (video, text, label) in LABELLED.items():
            writer.writerow([clip_id, video, "spk_test", "test", text, label])
    (root / "config.yaml").write_text(
        "results: out\nshard_size: 5\n"
        f"datasets:\n  tiny: {{layout: manifest, manifest: '{media / 'clips.csv'}'}}\n")
    return root


@pytest.fixture(scope="module")
def run(corpus):
    # the asr/audio/visual outputs stay: the kill test compares reruns with them
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml",
         "--cores", "2", "features_tiny"], cwd=corpus, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return corpus / "out" / "tiny"


def test_every_clip_is_in_clips_tsv_with_its_kind_and_reason(run):
    with (run / "clips.tsv").open() as f:
        rows = {r["clip_id"]: r for r in csv.DictReader(f, delimiter="\t")}
    assert set(rows) == set(EXPECTED)
    for clip_id, (status, kind, fragment, missing) in EXPECTED.items():
        row = rows[clip_id]
        assert (row["status"], row["kind"], row["missing"]) == (status, kind, missing), row
        assert fragment in row["reason"] if fragment else row["reason"] == "", row
    assert {r["shard"] for r in rows.values()} == {"00000", "00001"}
    # The language the language model detected, for every clip it heard (not the gold-text ones, c7 to c9).
    assert rows["c1"]["language"] == "en" and 0.5 < float(rows["c1"]["language_prob"]) <= 1, rows["c1"]
    assert rows["c3"]["language"] and 0 < float(rows["c3"]["language_prob"]) <= 1, rows["c3"]
    assert all(rows[c]["language"] == rows[c]["language_prob"] == "" for c in ("c4", "c5", "c6", "c7", "c8", "c9"))
    assert float(rows["c1"]["duration_s"]) == pytest.approx(3.11, abs=0.05) and rows["c5"]["duration_s"] == ""
    with (run / "clips_summary.tsv").open() as f:
        summary = list(csv.DictReader(f, delimiter="\t"))
    assert summary[0] == {"dataset": "tiny", "status": "ok", "kind": "", "clips": "1", "example_reason": ""}
    counts = {(r["status"], r["kind"]): int(r["clips"]) for r in summary}
    assert counts[("ok", "no_face")] == 1 and counts[("skipped", "no_face")] == 1 and sum(counts.values()) == 9
    no_face = next(r for r in summary if r["status"] == "skipped" and r["kind"] == "no_face")
    assert "no face detected" in no_face["example_reason"]


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
        columns = json.loads(f["visual"].attrs["columns"])
        present = f["visual/features"][0, : f["visual/lengths"][0], columns.index("face_present")]
        assert present.min() == 1.0
        assert f.attrs["schema_version"] >= 1 and "librosa" in f.attrs["library_versions"]


def test_labelled_test_clips_lacking_a_modality_are_masked_not_dropped(run):
    test = ShardDataset([run / "shards" / "00000.h5", run / "shards" / "00001.h5"], split="test", labelled=True)
    rows = {test.clip_id(i): test[i] for i in range(len(test))}
    assert sorted(rows) == ["c7", "c8", "c9"]
    lacks = {cid: (not r["audio_mask"].any(), not r["video_mask"].any()) for cid, r in rows.items()}
    assert lacks == {"c7": (False, True), "c8": (True, False), "c9": (True, True)}
    for r in rows.values():  # a missing stream is zeros, never made-up features
        assert r["audio"][~r["audio_mask"]].abs().sum() == 0 and r["video"][~r["video_mask"]].abs().sum() == 0
    assert rows["c7"]["label"] == -2.0 and rows["c8"]["audio_mask"].sum() == 0 and rows["c8"]["video_mask"].sum() > 0


# --- kill anywhere, rerun, same result -------------------------------------------------------

THREADS = {"asr": 2}  # the rules' threads: Snakemake sets OMP_NUM_THREADS & co. from them


def stage_command(stage: str, run: Path, config: Path, out: Path) -> tuple[list[str], list[Path], list[Path]]:
    """(command, the outputs it writes under ``out``, the same outputs of the uninterrupted run)."""
    plan = run / "plan" / "00000.tsv"
    kebr = [sys.executable, "-m", "kebr"]
    if stage == "plan":
        return kebr + ["plan", "--config", str(config), "--dataset", "tiny", "--out", str(out / "plan")], \
            [out / "plan" / "00000.tsv", out / "plan" / "00001.tsv"], [plan, run / "plan" / "00001.tsv"]
    if stage in ("asr", "audio", "visual"):
        return kebr + [stage, "--config", str(config), "--dataset", "tiny", "--plan", str(plan),
                       "--out", str(out / "00000.h5")], [out / "00000.h5"], [run / stage / "00000.h5"]
    if stage == "assemble":
        inputs = [f"--{s}={run / s / '00000.h5'}" for s in ("asr", "audio", "visual")]
        return kebr + ["assemble", "--config", str(config), "--dataset", "tiny", "--plan", str(plan), *inputs,
                       "--out", str(out / "shard.h5"), "--status", str(out / "status.tsv")], \
            [out / "shard.h5", out / "status.tsv"], [run / "shards" / "00000.h5", run / "status" / "00000.tsv"]
    return kebr + ["report", "--plan-dir", str(run / "plan"), "--status-dir", str(run / "status"),
                   "--dataset", "tiny", "--out", str(out / "clips.tsv")], \
        [out / "clips.tsv", out / "clips_summary.tsv"], [run / "clips.tsv", run / "clips_summary.tsv"]


@pytest.mark.parametrize("stage", ["plan", "asr", "audio", "visual", "assemble", "report"])
def test_killed_anywhere_reruns_to_the_same_output(run, corpus, tmp_path, stage):
    config = corpus / "config.yaml"
    cmd, outputs, expected = stage_command(stage, run, config, tmp_path)
    threads = str(THREADS.get(stage, 1))
    env = {**ENV, **{k: threads for k in ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}}
    bench = run.parent / "benchmarks" / "tiny" / ("clips_report" if stage == "report" else stage)
    bench = bench.with_suffix(".tsv") if stage in ("plan", "report") else bench / "00000.tsv"
    with bench.open() as f:
        seconds = float(next(csv.DictReader(f, delimiter="\t"))["s"])
    delay = random.Random(stage).uniform(0.1, 0.9) * seconds
    proc = subprocess.Popen(cmd, cwd=corpus, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its worker, as a cgroup kill does
    proc.wait()
    rerun = subprocess.run(cmd, cwd=corpus, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for got, want in zip(outputs, expected):
        assert got.read_bytes() == want.read_bytes(), (stage, got, f"killed after {delay:.2f} s")
    assert not list(tmp_path.rglob("*.journal"))


def test_stage_outputs_of_another_config_are_refused(run, corpus, tmp_path):
    """A stage output carries its fingerprint; assemble will not mix it with another config's."""
    meta, _ = read_stage_output(run / "visual" / "00000.h5")
    config = tmp_path / "edited.yaml"
    config.write_text((corpus / "config.yaml").read_text() + "visual: {fps: 5.0}\n")
    cmd, _, _ = stage_command("assemble", run, config, tmp_path)
    result = subprocess.run(cmd, cwd=corpus, env=ENV, capture_output=True, text=True)
    assert result.returncode == 2
    assert f"visual/00000.h5 was made under another config (fingerprint {meta['fingerprint']}" in result.stderr


def test_status_of_a_partly_done_run(run, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(run, results / "tiny")
    part = results / "tiny"
    for path in (part / "shards" / "00001.h5", part / "status" / "00001.tsv", part / "clips.tsv",
                 part / "visual" / "00001.h5"):
        path.unlink()
    # the visual job of shard 00001 is running: two clips done, a third in flight
    journal = Journal(part / "visual" / "00001.h5.journal", "visual", "any")
    journal.append({"clip_id": "c6", "error": "media: not a readable media file", "kind": SkipKind.UNREADABLE})
    journal.append({"clip_id": "c7", "error": "visual: no face detected", "kind": SkipKind.NO_FACE})
    journal.start(["c8"])
    journal.close_file()
    result = subprocess.run([sys.executable, "-m", "kebr", "status", str(results)], env=ENV, capture_output=True,
                            text=True, check=True)
    lines = result.stdout.splitlines()
    assert lines[0] == "tiny: 2 shards, 9 clips planned"
    assert "visual" in lines[4] and lines[4].split()[1:4] == ["1", "1", "0"]
    assert lines[4].endswith("0 ok, skipped: unreadable 1, no_face 1")
    assert lines[2].split()[1:4] == ["2", "0", "0"]  # asr: both shards done
    assert lines[5].split()[1:4] == ["1", "0", "1"]  # assemble
    assert lines[6] == "  assembled shards: 1 clips ok, 4 skipped: no_face 1, no_speech 1, no_audio_stream 1, zero_byte 1"
    status = json.loads(subprocess.run([sys.executable, "-m", "kebr", "status", str(results), "--json"], env=ENV,
                                       capture_output=True, text=True, check=True).stdout)
    assert status["tiny"]["stages"]["visual"]["running_clips"] == {"ok": 0, "skipped": {"unreadable": 1, "no_face": 1}}
