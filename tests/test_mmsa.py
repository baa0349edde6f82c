"""MMSA interop and OpenFace CSVs end to end: an MMSA feature pickle and OpenFace 2 CSVs go through
Snakemake into shards and a short fine-tuning run; the shards go back out as an MMSA pickle."""

from __future__ import annotations

import csv
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_visual import write_openface_csv

from kebr.cli import main as kebr_main
from kebr.config import load_config, validate_config
from kebr.experiments import run_finetuning, run_pretraining
from kebr.features.visual import OPENFACE_COLUMNS
from kebr.ingest import plan_clips
from kebr.masking import load_tokenizer
from kebr.media import write_clip
from kebr.mmsa import load_pickle
from kebr.demo.tts import synthesize

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

T_A, D_A, T_V, D_V = 24, 5, 16, 20  # MOSI's widths (COVAREP 5, Facet 20), short sequences
SENTENCES = ["THIS MOVIE WAS REALLY GOOD", "i hated the ending", "it was an awful waste of time",
             "the acting was wonderful", "it runs for about two hours", "a great and happy film",
             "the story made no sense at all", "i loved every minute of it", "what a terrible mess",
             "pretty boring in the middle"]
# (split, video, clip): videos never span splits; the 10th clip's vision holds a NaN (skipped).
CLIPS = [("train", "vidA", "1"), ("train", "vidA", "2"), ("train", "vidB", "1"), ("train", "vidB", "3"),
         ("train", "vidE", "1"), ("valid", "vidC", "1"), ("valid", "vidC", "2"), ("test", "vidD", "1"),
         ("test", "vidD", "2"), ("train", "vidF", "1")]


def mmsa_split(rng: np.random.Generator, rows: list[tuple[int, str, str]]) -> dict[str, object]:
    """One split as MMSA's files hold it: padded float32 arrays, -inf in COVAREP-like audio frames."""
    n = len(rows)
    audio, vision = np.zeros((n, T_A, D_A), np.float32), np.zeros((n, T_V, D_V), np.float32)
    audio_lengths, vision_lengths = rng.integers(3, T_A + 1, n), rng.integers(2, T_V + 1, n)
    for i in range(n):
        audio[i, : audio_lengths[i]] = rng.normal(0, 1, (audio_lengths[i], D_A))
        audio[i, rng.integers(0, audio_lengths[i], 2), 1] = -np.inf
        vision[i, : vision_lengths[i]] = rng.normal(0, 1, (vision_lengths[i], D_V))
    labels = np.round(rng.uniform(-3, 3, n), 1).astype(np.float32)
    return {
        "raw_text": np.array([SENTENCES[k] for k, _, _ in rows]),
        "audio": audio, "vision": vision,
        "text": rng.normal(0, 1, (n, 50, 768)).astype(np.float32),  # BERT features: not read
        "text_bert": np.zeros((n, 3, 50), np.float32),  # ids / mask / segments: not read
        "audio_lengths": audio_lengths, "vision_lengths": vision_lengths,
        "annotations": np.array(["Positive" if y > 0 else "Negative" for y in labels]),
        "classification_labels": (labels > 0).astype(np.float32),
        "regression_labels": labels,
        "id": np.array([f"{video}$_${clip}" for _, video, clip in rows]),
    }


def write_mmsa_pickle(path: Path, protocol: int = pickle.HIGHEST_PROTOCOL) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    data = {}
    for split in ("train", "valid", "test"):
        rows = [(k, v, c) for k, (s, v, c) in enumerate(CLIPS) if s == split]
        data[split] = mmsa_split(rng, rows)
    data["train"]["vision"][-1, 0, 3] = np.nan
    path.write_bytes(pickle.dumps(data, protocol=protocol))  # MMSA-FET's protocol
    return data


def write_openface_corpus(root: Path) -> dict[str, np.ndarray]:
    """An mmsa_raw corpus of TTS speech (audio-only mp4) with OpenFace 2 CSVs for its clips, as
    FeatureExtraction writes them, under openface/<video_id>/<clip_id>.csv."""
    rows, values = [], {}
    for k, (split, video, clip) in enumerate([("train", "ofA", "1"), ("train", "ofA", "2"), ("train", "ofB", "1"),
                                              ("valid", "ofC", "1"), ("test", "ofD", "1"), ("test", "ofD", "2")]):
        speech, sr = synthesize(SENTENCES[k])
        write_clip(root / "Raw" / video / f"{clip}.mp4", None, 25, audio=speech, sample_rate=sr)
        (root / "openface" / video).mkdir(parents=True, exist_ok=True)
        values[f"{video}/{clip}"] = write_openface_csv(root / "openface" / video / f"{clip}.csv", {0: (70, 65)})[0]
        rows.append([video, clip, SENTENCES[k], f"{(-1) ** k * 1.5}", "x", split, "0"])
    with (root / "label.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["video_id", "clip_id", "text", "label", "annotation", "mode", "label_by"], *rows])
    return values


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Snakemake: the shards of both datasets (fine-tuning runs in-process below: it is the training
    path of every dataset alike, and a process per run would only add start-up time)."""
    root = tmp_path_factory.mktemp("mmsa")
    original = write_mmsa_pickle(root / "unaligned_50.pkl")
    openface = write_openface_corpus(root / "ofc")
    finetune = "{epochs: 1, batch_size: 4, seeds: [0], num_workers: 0}"
    (root / "config.yaml").write_text(f"""
results: out
shard_size: 6
visual: {{backend: openface_csv, openface_dir: ofc/openface}}
model: {{num_layers: 1, d_embed: 32}}
datasets:
  mosi_pkl: {{layout: mmsa_pickle, pickle: unaligned_50.pkl, trust_pickle: true, finetune: {finetune}}}
  ofc:
    layout: mmsa_raw
    root: ofc
    finetune: {finetune}
    pretrain: {{epochs: 1, batch_size: 4, num_workers: 0}}
""")
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2",
                             "features_mosi_pkl", "features_ofc"], cwd=root, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return {"root": root, "original": original, "openface": openface}


def read_clips_tsv(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        return {r["clip_id"]: r for r in csv.DictReader(f, delimiter="\t")}


def test_pickle_becomes_shards_with_real_lengths_and_the_plans_only_load(run):
    out = run["root"] / "out" / "mosi_pkl"
    clips = read_clips_tsv(out / "clips.tsv")
    assert len(clips) == 10 and sorted({r["shard"] for r in clips.values()}) == ["00000", "00001"]
    assert clips["vidF/1"]["status"] == "skipped" and "visual: the MMSA pickle holds NaN" in clips["vidF/1"]["reason"]
    assert all(r["status"] == "ok" for k, r in clips.items() if k != "vidF/1")
    # The pickle is unpickled by the plan job only; each shard job reads its own arrays.
    logs = run["root"] / "out" / "logs" / "mosi_pkl"
    assert "sha256" in (logs / "plan.log").read_text()
    assert sorted(p.name for p in (out / "plan").glob("*.mmsa.h5")) == ["00000.mmsa.h5", "00001.mmsa.h5"]

    original, tokenizer = run["original"], load_tokenizer("bundled")
    seen = 0
    for shard in sorted((out / "shards").glob("*.h5")):
        with h5py.File(shard) as f:
            assert f["audio/features"].shape[1:] == (T_A, D_A) and f["visual/features"].shape[1:] == (T_V, D_V)
            assert json.loads(f.attrs["feature_config"])["mmsa_pickle"]["release"] is None
            for row, clip_id in enumerate(f["id"].asstr()):
                split, video, clip = next(c for c in CLIPS if f"{c[1]}/{c[2]}" == clip_id)
                part = original[split]
                k = list(part["id"]).index(f"{video}$_${clip}")
                assert f["split"].asstr()[row] == split and f["speaker"].asstr()[row] == video
                assert f["label"][row] == part["regression_labels"][k]
                assert f["text/raw"].asstr()[row] == part["raw_text"][k] and f["text/source"].asstr()[row] == "gold"
                assert f["text/input_ids"][row, f["text/mask_index"][row]] == tokenizer.mask_token_id
                n_a, n_v = f["audio/lengths"][row], f["visual/lengths"][row]
                assert (n_a, n_v) == (part["audio_lengths"][k], part["vision_lengths"][k])
                # MMSA's loader's one cleaning: audio -inf -> 0; padding stays zero.
                np.testing.assert_array_equal(f["audio/features"][row], np.where(np.isneginf(part["audio"][k]), 0, part["audio"][k]))
                np.testing.assert_array_equal(f["visual/features"][row], part["vision"][k])
                seen += 1
    assert seen == 9


def test_export_round_trips_the_pickle(run, tmp_path, monkeypatch):
    exported = tmp_path / "export.pkl"
    monkeypatch.chdir(run["root"])
    kebr_main(["export-mmsa", "--config", "config.yaml", "--dataset", "mosi_pkl", "--out", str(exported)])
    back = load_pickle(exported, trusted=True)  # our own reader: the layout it writes is the one it reads
    with exported.open("rb") as f:
        raw = pickle.load(f)
    for split, part in run["original"].items():
        keep = [k for k, i in enumerate(part["id"]) if i != "vidF$_$1"]
        order = np.argsort(part["id"][keep])  # exported in clip-id order
        rows = np.array(keep)[order]
        mine = raw[split]
        assert list(mine["id"]) == list(part["id"][rows]) == back[split]["id"]
        assert list(mine["raw_text"]) == list(part["raw_text"][rows])
        np.testing.assert_array_equal(mine["regression_labels"], part["regression_labels"][rows])
        np.testing.assert_array_equal(mine["audio_lengths"], part["audio_lengths"][rows])
        np.testing.assert_array_equal(mine["vision_lengths"], part["vision_lengths"][rows])
        audio = part["audio"][rows]
        np.testing.assert_array_equal(mine["audio"], np.where(np.isneginf(audio), 0, audio))
        np.testing.assert_array_equal(mine["vision"], part["vision"][rows])
        assert mine["audio"].dtype == mine["vision"].dtype == np.float32
        # text_bert: ids / mask / segment ids of our tokenizer; text: our LM's states over them.
        n = len(rows)
        assert mine["text_bert"].shape == (n, 3, 39) and mine["text"].shape == (n, 39, 384)
        ids = load_tokenizer("bundled")(list(mine["raw_text"]), truncation=True, max_length=39)["input_ids"]
        for i in range(n):
            assert mine["text_bert"][i, 0, : len(ids[i])].tolist() == ids[i] and mine["text_bert"][i, 1].sum() == len(ids[i])
        assert np.abs(mine["text"]).sum(axis=2).min() > 0


@pytest.fixture(scope="module")
def config(run):
    config = load_config(run["root"] / "config.yaml")
    config["results"] = str(run["root"] / "out")
    return config


@pytest.mark.parametrize("dataset", ["mosi_pkl", "ofc"])
def test_a_short_finetuning_run_on_the_shards(config, dataset, tmp_path):
    metrics = run_finetuning(config, dataset, None, "no_pretrain", 0, tmp_path / dataset)
    assert metrics["n_test"] == 2 and np.isfinite(metrics["mae"]) and 0 <= metrics["acc2_has0"] <= 1
    assert (tmp_path / dataset / "predictions.csv").read_text().count("\n") == 3


def test_finetuning_from_other_feature_widths_is_refused(config, tmp_path):
    pretrained = tmp_path / "pretrain"
    run_pretraining(config, "ofc", "full", pretrained)  # librosa33 + OpenFace: 33 and 709 wide
    with pytest.raises(ValueError, match=r"width audio 33, visual 709, but these shards have audio 5, visual 20"):
        run_finetuning(config, "mosi_pkl", pretrained, "full", 0, tmp_path / "finetune")


def test_openface_csvs_go_into_the_shard_as_written(run):
    out = run["root"] / "out" / "ofc"
    assert all(r["status"] == "ok" for r in read_clips_tsv(out / "clips.tsv").values())
    with h5py.File(out / "shards" / "00000.h5") as f:
        assert json.loads(f["visual"].attrs["columns"]) == OPENFACE_COLUMNS
        for row, clip_id in enumerate(f["id"].asstr()):
            assert f["visual/lengths"][row] == 55  # the first 55 of the face's 70 rows, as the reference
            np.testing.assert_allclose(f["visual/features"][row], run["openface"][clip_id][:55], rtol=1e-6)
            assert 50 < f["audio/lengths"][row] < 400  # the clip's speech, not the CSV


def test_pickles_are_refused_unless_trusted_and_hold_only_arrays(tmp_path):
    path = tmp_path / "unaligned_50.pkl"
    write_mmsa_pickle(path, protocol=2)  # an older protocol: numpy's other constructors
    untrusted = {"layout": "mmsa_pickle", "pickle": str(path)}
    with pytest.raises(ValueError, match="can run any code it contains: set `trust_pickle: true`"):
        validate_config({"datasets": {"mosi": untrusted}})
    with pytest.raises(ValueError, match="can run any code"):
        plan_clips(untrusted, 0, 1000, 0.1, 0.1)
    assert len(plan_clips({**untrusted, "trust_pickle": True}, 0, 1000, 0.1, 0.1)) == 10

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"train": Payload(), "valid": {}, "test": {}}))
    with pytest.raises(pickle.UnpicklingError, match=r"asks for posix.system"):
        load_pickle(evil, trusted=True)
    assert not marker.exists()


def test_aligned_pickle_without_lengths_counts_the_text_mask(tmp_path):
    """MMSA-FET writes aligned files without lengths; MMSA's models then use text_bert's mask."""
    data = {s: mmsa_split(np.random.default_rng(1), [(0, "v", str(i)) for i in range(2)]) for s in ("train", "valid", "test")}
    for part in data.values():
        del part["audio_lengths"], part["vision_lengths"]
        part["text_bert"][:, 1, :7] = 1
    path = tmp_path / "aligned_50.pkl"
    path.write_bytes(pickle.dumps(data))
    parts = load_pickle(path, trusted=True)
    assert parts["train"]["audio_lengths"].tolist() == parts["train"]["vision_lengths"].tolist() == [7, 7]
    del data["train"]["text_bert"]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match="neither audio_lengths nor text_bert"):
        load_pickle(path, trusted=True)


# Hand-made pickles that pass the allow-list but ask for far more memory than they carry.
RECONSTRUCT = b"cnumpy.core.multiarray\n_reconstruct\n"


def dtype_op(code: str) -> bytes:
    """Opcodes pushing numpy.dtype(code, False, True), as numpy's own pickles build a dtype."""
    return b"cnumpy\ndtype\n" + b"X" + len(code).to_bytes(4, "little") + code.encode() + b"\x89\x88\x87R"


def reconstruct_pickle(shape: tuple[int, ...], code: str) -> bytes:
    """``_reconstruct(ndarray, shape, dtype(code))``: numpy allocates the array as it is called."""
    dims = b"".join(b"J" + d.to_bytes(4, "little") for d in shape)
    tuple_op = {1: b"\x85", 2: b"\x86"}[len(shape)]
    return b"\x80\x02" + RECONSTRUCT + b"cnumpy\nndarray\n" + dims + tuple_op + dtype_op(code) + b"\x87R."


class SharedState:
    """An array whose pickled state holds ``buffer`` itself: one bytes object, memoized once by the
    pickler, filling every array that refers to it (numpy's own pickling never shares one)."""

    def __init__(self, buffer: bytes) -> None:
        self.buffer = buffer

    def __reduce__(self):
        from numpy.core.multiarray import _reconstruct

        return _reconstruct, (np.ndarray, (0,), b"b"), (1, (len(self.buffer),), np.dtype("u1"), False, self.buffer)


def test_allow_listed_pickles_cannot_ask_for_more_memory_than_they_carry(tmp_path):
    objects = tmp_path / "objects.pkl"
    objects.write_bytes(reconstruct_pickle((10_000_000,), "O8"))
    assert len(objects.read_bytes()) < 150
    with pytest.raises(pickle.UnpicklingError, match=rf"^{objects}: array #1 of the pickle \(shape \(10000000,\), "
                       r"dtype object\) holds Python objects; an MMSA feature pickle holds numbers"):
        load_pickle(objects, trusted=True)

    huge = tmp_path / "huge.pkl"
    huge.write_bytes(reconstruct_pickle((80_000, 100_000), "i1"))  # 7.45 GiB, if numpy were asked
    size = len(huge.read_bytes())
    with pytest.raises(pickle.UnpicklingError, match=rf"^{huge}: array #1 of the pickle \(shape \(80000, 100000\), "
                       rf"dtype int8\) would take 7.45 GiB, more than this {size} bytes file can carry: its arrays "
                       rf"may take 2x its size together \({2 * size} bytes left\)"):
        load_pickle(huge, trusted=True)

    # A state whose shape its bytes cannot fill (BUILD after a legitimate _reconstruct of (0,)).
    small = pickle.dumps(np.zeros(4, np.float32), protocol=2)
    lying = tmp_path / "lying.pkl"
    lying.write_bytes(small.replace(b"K\x04\x85", b"J" + (10**9).to_bytes(4, "little") + b"\x85", 1))
    with pytest.raises(pickle.UnpicklingError, match=r"array #1 of the pickle \(shape \(1000000000,\), dtype float32\) "
                       r"would take 3.73 GiB"):
        load_pickle(lying, trusted=True)

    # One 1 MiB buffer referred to by 50 arrays: 50 MiB from a file of 1 MiB; refused at the third.
    shared = tmp_path / "shared.pkl"
    buffer = bytes(2**20)
    shared.write_bytes(pickle.dumps([SharedState(buffer) for _ in range(50)], protocol=4))
    assert len(shared.read_bytes()) < 2**20 + 5000
    with pytest.raises(pickle.UnpicklingError, match=r"array #3 of the pickle \(shape \(1048576,\), dtype uint8\) "
                       r"would take 1.0 MiB, more than this 1.0 MiB file can carry"):
        load_pickle(shared, trusted=True)  # arrays #1 and #2 fit in 2x the file

    # bytes() is allowed for protocol 2's empty bytes only: bytes(n) would allocate n zero bytes
    zeros = tmp_path / "zeros.pkl"
    zeros.write_bytes(b"\x80\x02c__builtin__\nbytes\nJ" + (10**9).to_bytes(4, "little") + b"\x85R.")
    with pytest.raises(pickle.UnpicklingError, match=r"calls bytes\(1000000000,\); numpy's protocol-2 pickles call "
                       "it without arguments only"):
        load_pickle(zeros, trusted=True)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_normal_pickles_of_every_protocol_load_within_the_budget(tmp_path, protocol):
    path = tmp_path / "unaligned_50.pkl"
    original = write_mmsa_pickle(path, protocol=protocol)
    parts = load_pickle(path, trusted=True)
    for split, part in original.items():
        assert parts[split]["id"] == list(part["id"]) and parts[split]["raw_text"] == list(part["raw_text"])
        np.testing.assert_array_equal(parts[split]["audio"], part["audio"])
        np.testing.assert_array_equal(parts[split]["vision"], part["vision"])
        assert type(parts[split]["audio"]) is np.ndarray  # not the unpickler's guarded subclass
        np.testing.assert_array_equal(parts[split]["label"], part["regression_labels"])
    # a split without clips: empty arrays (protocol 2 writes their data as bytes())
    original["valid"] = mmsa_split(np.random.default_rng(2), [])
    path.write_bytes(pickle.dumps(original, protocol=protocol))
    parts = load_pickle(path, trusted=True)
    assert parts["valid"]["id"] == [] and parts["valid"]["audio"].shape == (0, T_A, D_A)


def test_the_plan_unpickles_in_a_worker_under_the_plan_jobs_memory(tmp_path):
    """Python containers cost up to ~70 bytes per pickle byte (no array to charge): the plan's
    supervised worker is killed at the plan job's mem_mb, and the plan fails naming the peak."""
    bomb = tmp_path / "dicts.pkl"
    bomb.write_bytes(b"\x80\x02(" + b"}" * 8_000_000 + b"l.")  # 8 MB: eight million empty dicts, ~600 MB
    good = tmp_path / "unaligned_50.pkl"
    write_mmsa_pickle(good)
    (tmp_path / "config.yaml").write_text("""results: out
datasets:
  bomb: {layout: mmsa_pickle, pickle: dicts.pkl, trust_pickle: true}
  good: {layout: mmsa_pickle, pickle: ./unaligned_50.pkl, trust_pickle: true}
resources: {mem_mb: {plan: 400}}
""")
    run = [sys.executable, "-m", "kebr", "plan", "--config", "config.yaml"]
    result = subprocess.run([*run, "--dataset", "bomb", "--out", "out/bomb/plan"], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    match = re.search(rf"{bomb.name}: unpickling it needed more memory than the job has: its pickle worker reached "
                      r"(\d+) MB resident, over the (\d+) MB the job's (\d+) MB leave it", result.stderr)
    assert match, result.stderr[-3000:]
    peak, share, job = map(int, match.groups())
    assert job == 400 + round(1.2 * 8_000_003 / 2**20) and share < peak < share + 400
    assert not (tmp_path / "out" / "bomb" / "plan" / "00000.tsv").exists()
    # a normal pickle's plan under the same memory: its clips, and each shard's arrays from the worker
    result = subprocess.run([*run, "--dataset", "good", "--out", "out/good/plan"], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == {"dataset": "good", "clips": 10, "shards": 1}
    assert result.stderr.count("pickle worker (pid") == 1  # one unpickling for the clips and the arrays
    with h5py.File(tmp_path / "out" / "good" / "plan" / "00000.mmsa.h5") as f:
        assert f["audio_offsets"][-1] == sum(int(p["audio_lengths"].sum()) for p in write_mmsa_pickle(good).values())
