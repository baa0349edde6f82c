"""Shard round trip: what write_shard stores is what ShardDataset gives back, padded and masked."""

import json
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from kebr.asr import gold_transcript
from kebr.masking import SentimentMasker, load_tokenizer
from kebr.shards import SCHEMA_VERSION, ShardDataset, ShardRow, read_attrs, write_shard


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("bundled")


def rows(tokenizer):
    masker = SentimentMasker(tokenizer, seed=0)
    rng = np.random.default_rng(0)
    texts = [("a wonderful film", 2.5, "train"), ("the plot was awful", -2.0, "valid"),
             ("nothing happened here", None, "train")]
    return [ShardRow(clip_id=f"v/{i}", split=split, speaker=f"s{i}", label=label,
                     transcript=gold_transcript(text).to_json(), masked=masker(text, f"v/{i}"),
                     audio=rng.normal(size=(5 + i, 3)).astype(np.float32),
                     visual=rng.normal(size=(2 + i, 4)).astype(np.float32))
            for i, (text, label, split) in enumerate(texts)]


def write(path, tokenizer, data):
    return write_shard(path, data, audio_columns=["a0", "a1", "a2"], visual_columns=["v0", "v1", "v2", "v3"],
                       audio_frames=6, visual_frames=3, text_length=12, tokenizer=tokenizer,
                       attrs={"dataset": "t", "feature_config": {"audio": {"x": 1}}})


def test_round_trip_values_padding_and_filters(tmp_path, tokenizer):
    data = rows(tokenizer)
    path = write(tmp_path / "00000.h5", tokenizer, data)
    assert [p.name for p in tmp_path.iterdir()] == ["00000.h5"]  # no temporary file left
    attrs = read_attrs(path)
    assert attrs["schema_version"] == SCHEMA_VERSION and attrs["n"] == 3
    assert attrs["audio_columns"] == ["a0", "a1", "a2"] and json.loads(attrs["feature_config"]) == {"audio": {"x": 1}}

    everything = ShardDataset([path])
    assert len(everything) == 3 and everything.clip_id(2) == "v/2"
    item = everything[0]
    np.testing.assert_array_equal(item["audio"][:5].numpy(), data[0].audio)
    assert item["audio_mask"].tolist() == [True] * 5 + [False] and item["audio"][5].abs().sum() == 0
    # 7 audio frames truncate to the 6 the shard holds
    np.testing.assert_array_equal(everything[2]["audio"].numpy(), data[2].audio[:6])
    assert everything[2]["video_mask"].all()
    masked = data[0].masked
    assert item["input_ids"][: len(masked.input_ids)].tolist() == masked.input_ids
    assert item["input_ids"][item["mask_index"]] == tokenizer.mask_token_id
    assert item["mask_label"] == pytest.approx(masked.label) and masked.word == "wonderful"
    assert item["raw_input_ids"][: item["raw_attention_mask"].sum()].tolist() == tokenizer("a wonderful film")["input_ids"]
    assert item["label"] == pytest.approx(2.5) and torch.isnan(everything[2]["label"])

    assert [ShardDataset([path], split="valid").clip_id(0)] == ["v/1"]
    assert len(ShardDataset([path], split="train", labelled=True)) == 1
    with h5py.File(path) as f:
        assert list(f["text/source"].asstr()) == ["gold"] * 3
        # Contiguous and uncompressed: a run of rows is one plain read (kebr/shards.py _put).
        assert f["audio/features"].chunks is None and f["audio/features"].compression is None


def test_empty_shard_and_mismatched_shards(tmp_path, tokenizer):
    empty = write(tmp_path / "e.h5", tokenizer, [])
    assert read_attrs(empty)["n"] == 0 and len(ShardDataset([empty])) == 0
    other = write_shard(tmp_path / "o.h5", rows(tokenizer), audio_columns=["x", "y", "z"],
                        visual_columns=["v0", "v1", "v2", "v3"], audio_frames=6, visual_frames=3, text_length=12,
                        tokenizer=tokenizer, attrs={})
    with pytest.raises(ValueError, match="differ"):
        ShardDataset([write(tmp_path / "a.h5", tokenizer, rows(tokenizer)), other])


def test_other_schema_version_is_refused(tmp_path, tokenizer):
    path = write(tmp_path / "s.h5", tokenizer, rows(tokenizer))
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="schema"):
        read_attrs(path)


def test_same_rows_give_a_byte_identical_shard(tmp_path, tokenizer):
    a = write(tmp_path / "a.h5", tokenizer, rows(tokenizer))
    time.sleep(1.1)  # HDF5 stores modification times in seconds
    b = write(tmp_path / "b.h5", tokenizer, rows(tokenizer))
    assert a.read_bytes() == b.read_bytes()


# Reads every row of the shards named on the command line in a random order (each shard is reopened
# many times) with at most 32 files open, and prints (clip id, first audio value, label) per row; then
# tries the same with every shard kept open (the old behaviour) and prints the error it meets.
READ_ALL = """
import json, sys
import numpy as np
from kebr.shards import ShardDataset
dataset = ShardDataset(sys.argv[1:], max_open_files=32)
rows = []
for i in np.random.default_rng(0).permutation(len(dataset)).tolist():
    item = dataset[i]
    rows.append([dataset.clip_id(i), float(item["audio"][0, 0]), float(item["label"])])
unbounded, error = ShardDataset(sys.argv[1:], max_open_files=10_000), None
try:
    for i in range(len(unbounded)):
        unbounded[i]
except OSError as exc:
    error = str(exc)
print(json.dumps({"rows": sorted(rows), "unbounded": error}))
"""


def test_any_number_of_shards_reads_under_a_small_open_file_limit(tmp_path, tokenizer):
    """200 shards under `ulimit -n 64`: the LRU of open files reads every row with the right values;
    keeping every shard open (the old behaviour) runs out of file descriptors."""
    template = write(tmp_path / "template.h5", tokenizer, rows(tokenizer)[:2])
    paths, expected = [], []
    for s in range(200):  # copies of one shard, each given its own ids, labels and audio values
        path = tmp_path / f"{s:05d}.h5"
        shutil.copyfile(template, path)
        ids, labels, audio = [f"s{s}/0", f"s{s}/1"], [s + 0.0, s + 0.5], [s * 10.0, s * 10.0 + 1]
        with h5py.File(path, "r+") as f:
            f["id"][:] = ids
            f["label"][:] = labels
            f["audio/features"][:, 0, 0] = audio
        paths.append(str(path))
        expected += [[i, a, pytest.approx(y)] for i, a, y in zip(ids, audio, labels)]

    result = subprocess.run(["bash", "-c", 'ulimit -n 64 && exec "$@"', "bash", sys.executable, "-c", READ_ALL, *paths],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    read = json.loads(result.stdout)
    assert read["rows"] == sorted(expected, key=lambda r: r[0])
    assert "Too many open files" in read["unbounded"]
