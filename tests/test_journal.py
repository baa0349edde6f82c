"""The per-clip journal survives a kill: finished records come back, a torn last line is dropped."""

import numpy as np

from kebr.journal import Journal, decode_array, encode_array, read_stage_output, write_stage_output


def test_journal_resumes_after_torn_write(tmp_path):
    path = tmp_path / "stage.jsonl.journal"
    journal = Journal(path)
    features = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    journal.append({"clip_id": "a", "features": encode_array(features)})
    journal.append({"clip_id": "b", "error": "media: no audio stream"})
    journal.close()
    with path.open("a") as f:  # what SIGKILL mid-write leaves behind
        f.write('{"clip_id": "c", "feat')
    resumed = Journal(path)
    assert set(resumed.records) == {"a", "b"} and "c" not in resumed
    np.testing.assert_array_equal(decode_array(resumed.records["a"]["features"]), features)
    resumed.append({"clip_id": "c", "error": "x"})
    resumed.close()
    assert set(Journal(path).records) == {"a", "b", "c"}


def test_stage_output_round_trip(tmp_path):
    out = write_stage_output(tmp_path / "o.jsonl", {"columns": ["zcr"]}, [{"clip_id": "a", "v": 1}])
    meta, records = read_stage_output(out)
    assert meta == {"columns": ["zcr"]} and records == {"a": {"clip_id": "a", "v": 1}}
