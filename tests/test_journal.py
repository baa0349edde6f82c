"""The per-clip journal survives a kill and knows what the killed job was doing; stage outputs round-trip."""

import numpy as np
import pytest

from kebr.clips import SkipKind
from kebr.journal import Journal, read_journal_counts, read_stage_output, write_stage_output

FP = "fingerprint-a"


def test_journal_resumes_after_torn_write(tmp_path):
    path = tmp_path / "stage.h5.journal"
    journal = Journal(path, "audio", FP)
    features = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    journal.set_meta({"columns": ["x", "y", "z"]})
    journal.append({"clip_id": "a", "features": features})
    journal.append({"clip_id": "b", "error": "media: no audio stream", "kind": SkipKind.NO_AUDIO_STREAM})
    journal.close_file()
    with path.open("a") as f:  # what SIGKILL mid-write leaves behind
        f.write('{"clip_id": "c", "feat')
    resumed = Journal(path, "audio", FP)
    assert set(resumed.records) == {"a", "b"} and "c" not in resumed and resumed.discarded is None
    assert resumed.meta == {"columns": ["x", "y", "z"]} and resumed.strikes == {}
    np.testing.assert_array_equal(resumed.records["a"]["features"], features)
    resumed.append({"clip_id": "c", "error": "x", "kind": SkipKind.SILENCE})
    resumed.close_file()
    assert set(Journal(path, "audio", FP).records) == {"a", "b", "c"}


def test_journal_of_another_config_or_stage_is_discarded(tmp_path):
    path = tmp_path / "stage.h5.journal"
    journal = Journal(path, "visual", FP)
    journal.append({"clip_id": "a", "error": "no face", "kind": SkipKind.NO_FACE})
    journal.close_file()
    other = Journal(path, "visual", "fingerprint-b")
    assert other.records == {} and "fingerprint-a" in other.discarded
    other.close_file()
    assert Journal(path, "audio", "fingerprint-b").records == {}  # not the visual stage's either
    path.write_text('{"clip_id": "a", "error": "old format, no header"}\n')
    assert Journal(path, "audio", FP).records == {}


def strikes_after(tmp_path, events):
    path = tmp_path / "j"
    path.unlink(missing_ok=True)
    journal = Journal(path, "asr", FP)
    for kind, value in events:
        getattr(journal, kind)(*value)
    journal.close_file()
    return Journal(path, "asr", FP)


def test_whole_job_deaths_are_counted_per_group_and_signals_are_not(tmp_path):
    rec = lambda cid: {"clip_id": cid, "text": "hi"}  # noqa: E731
    # the job died with [a, b] in flight: one strike; the next job ran the same batch and died again
    j = strikes_after(tmp_path, [("start", (["a", "b"],)), ("start", (["a", "b"],))])
    assert j.strikes == {("a", "b"): 2}
    # a batch that finished is settled; one that was interrupted by a signal carries no strike
    j = strikes_after(tmp_path, [("start", (["a", "b"],)), ("append_batch", ([rec("a"), rec("b")],)),
                                 ("start", (["c"],)), ("close", (["c"], "interrupted")), ("start", (["d"],))])
    assert j.strikes == {("d",): 1} and set(j.records) == {"a", "b"}
    # a batch split after an in-process crash: no strike for the batch, one for the clip in flight
    j = strikes_after(tmp_path, [("start", (["a", "b"],)), ("close", (["a", "b"], "split")),
                                 ("start", (["a"],)), ("append", (rec("a"),)), ("start", (["b"],))])
    assert j.strikes == {("b",): 1}
    # the strikes survive a reopen that appends (the compact form is the log itself)
    path = tmp_path / "j"
    j.start(["b"])
    j.close_file()
    assert Journal(path, "asr", FP).strikes == {("b",): 2}


def test_unexpected_errors_are_not_final(tmp_path):
    j = strikes_after(tmp_path, [("append", ({"clip_id": "a", "error": "ValueError: x", "kind": SkipKind.UNEXPECTED},)),
                                 ("append", ({"clip_id": "b", "error": "no face", "kind": SkipKind.NO_FACE},))])
    assert set(j.records) == {"b"}
    assert read_journal_counts(tmp_path / "j") == {SkipKind.UNEXPECTED: 1, SkipKind.NO_FACE: 1}


def test_stage_output_round_trip_is_compact_and_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    records = [{"clip_id": "a", "duration_s": 2.5, "features": rng.normal(size=(40, 3)).astype(np.float32)},
               {"clip_id": "b", "duration_s": None, "error": "no face", "kind": SkipKind.NO_FACE},
               {"clip_id": "c", "duration_s": 1.0, "features": np.zeros((0, 3), np.float32)}]
    a = write_stage_output(tmp_path / "a.h5", {"columns": ["x", "y", "z"], "fingerprint": FP}, records)
    b = write_stage_output(tmp_path / "b.h5", {"columns": ["x", "y", "z"], "fingerprint": FP}, records)
    assert a.read_bytes() == b.read_bytes()
    meta, back = read_stage_output(a)
    assert meta == {"columns": ["x", "y", "z"], "fingerprint": FP} and list(back) == ["a", "b", "c"]
    np.testing.assert_array_equal(back["a"]["features"], records[0]["features"])
    assert back["c"]["features"].shape == (0, 3) and "features" not in back["b"]
    assert back["b"] == records[1]
    with pytest.raises(ValueError, match="differ in shape"):
        write_stage_output(tmp_path / "bad.h5", {}, [records[0], {"clip_id": "d", "features": np.zeros((2, 4))}])


def test_transient_job_failures_are_counted_per_group_and_persistent_skips_are_retried(tmp_path):
    j = strikes_after(tmp_path, [("start", (["a", "b"],)), ("close", (["a", "b"], "interrupted")),
                                 ("transient_failed", (["a", "b"], "OSError: [Errno 5] x")),
                                 ("start", (["a"],)), ("close", (["a"], "interrupted")),
                                 ("transient_failed", (["a"], "OSError: [Errno 5] x"))])
    assert j.transient == {("a", "b"): 1, ("a",): 1} and j.strikes == {}  # a failed job run is no strike
    assert j.transient_failed(["a"], "OSError: [Errno 5] x") == 2
    j.append({"clip_id": "a", "error": "OSError: [Errno 5] x (...)", "kind": SkipKind.PERSISTENT_ERROR})
    j.close_file()
    again = Journal(tmp_path / "j", "asr", FP)
    assert again.transient == {("a", "b"): 1, ("a",): 2}
    assert "a" not in again  # not final: a restarted job tries the clip again (the storage may be back)
    assert read_journal_counts(tmp_path / "j") == {SkipKind.PERSISTENT_ERROR: 1}


def test_records_strikes_and_transient_counts_of_changed_inputs_are_stale(tmp_path):
    path = tmp_path / "j"
    old = {"a": "in-a-1", "b": "in-b-1", "c": "in-c-1"}
    j = Journal(path, "visual", FP, inputs=old)
    j.start(["a"])
    j.append({"clip_id": "a", "error": "no face", "kind": SkipKind.NO_FACE})
    j.start(["b"])
    j.append_batch([{"clip_id": "b", "features": np.ones((2, 1), np.float32)}])
    j.transient_failed(["c"], "OSError: [Errno 5] x")
    j.start(["c"])  # and the job dies with c in flight
    j.close_file()
    assert '"input": "in-a-1"' in path.read_text() and '"inputs": ["in-c-1"]' in path.read_text()
    same = Journal(path, "visual", FP, inputs=old)
    assert set(same.records) == {"a", "b"} and same.stale == set()
    assert same.strikes == {("c",): 1} and same.transient == {("c",): 1}
    assert "input" not in same.records["a"]  # bookkeeping, not part of the record the stage writes
    same.close_file()
    # a's file was replaced (or its plan row edited), and so was c's: their work is redone, b's kept
    new = Journal(path, "visual", FP, inputs={**old, "a": "in-a-2", "c": "in-c-2"})
    assert set(new.records) == {"b"} and new.stale == {"a"}
    assert new.strikes == {} and new.transient == {}  # c's death and failures were on its old input
    new.append({"clip_id": "a", "error": "no face", "kind": SkipKind.NO_FACE})
    new.close_file()
    again = Journal(path, "visual", FP, inputs={**old, "a": "in-a-2", "c": "in-c-2"})
    assert set(again.records) == {"a", "b"} and again.stale == set()
