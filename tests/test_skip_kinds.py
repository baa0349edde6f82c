"""Skip kinds are SkipKind members from where the skip happens to the files, and back: every kind is
described, the docs name only real kinds, and a kind read back from a file that this code does not
know fails loudly."""

import json
import re
from pathlib import Path

import pytest

from kebr.clips import ClipError, SkipKind, skip_record
from kebr.journal import Journal, read_journal_counts, read_stage_output, write_stage_output
from kebr.stages.assemble import read_status, write_status

REPO = Path(__file__).resolve().parents[1]


def test_every_kind_is_described_and_named_by_its_value():
    for kind in SkipKind:
        assert kind.description.strip(), kind
        assert kind.value == kind.name.lower() and str(kind) == kind.value and json.dumps(kind) == f'"{kind.value}"'


def test_the_kinds_the_docs_name_are_skip_kinds():
    corpora = (REPO / "docs/corpora.md").read_text()
    listed = re.search(r"`kind` a stable short name of why\n(.*?)the full list with meanings", corpora, re.S)
    assert listed, "docs/corpora.md no longer lists the clips.tsv kinds where this test looks"
    named = set(re.findall(r"`(\w+)`", listed.group(1)))
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        named |= set(re.findall(r"(?:skipped as|kind) `(\w+)`", page.read_text()))
    assert len(named) >= 12 and named <= set(SkipKind), sorted(named - set(SkipKind))


def test_a_skip_is_made_with_a_member_not_a_string():
    with pytest.raises(TypeError, match="SkipKind member, not 'no_face'"):
        ClipError("visual: no face", kind="no_face")
    assert skip_record(ClipError("visual: no face", kind=SkipKind.NO_FACE))["kind"] is SkipKind.NO_FACE
    assert skip_record(ValueError("x")) == {"error": "ValueError: x", "kind": SkipKind.UNEXPECTED}


def test_kinds_read_back_as_members_and_an_unknown_kind_fails_naming_its_file(tmp_path):
    skip = {"clip_id": "b", "duration_s": None, "error": "media: no audio stream", "kind": SkipKind.NO_AUDIO_STREAM}
    journal_path = tmp_path / "audio.h5.journal"
    journal = Journal(journal_path, "audio", "fp")
    journal.append({"clip_id": "a", "duration_s": 1.0})
    journal.append(skip)
    journal.close_file()
    assert Journal(journal_path, "audio", "fp").records["b"]["kind"] is SkipKind.NO_AUDIO_STREAM
    assert read_journal_counts(journal_path) == {"": 1, SkipKind.NO_AUDIO_STREAM: 1}
    output = write_stage_output(tmp_path / "audio.h5", {"stage": "audio"}, [skip])
    assert read_stage_output(output)[1]["b"]["kind"] is SkipKind.NO_AUDIO_STREAM
    row = {"clip_id": "b", "status": "skipped", "kind": SkipKind.NO_AUDIO_STREAM, "reason": "audio: no audio stream",
           "missing": "", "duration_s": "", "shard": "00000", "language": "", "language_prob": ""}
    write_status([row, {**row, "clip_id": "c", "status": "ok", "kind": "", "reason": ""}], tmp_path / "status.tsv")
    assert [r["kind"] for r in read_status(tmp_path / "status.tsv")] == [SkipKind.NO_AUDIO_STREAM, ""]

    # the same files holding a kind no SkipKind has (a newer kebr's, or a typo)
    with journal_path.open("a") as f:
        f.write(json.dumps({"clip_id": "d", "error": "x", "kind": "no_sound"}) + "\n")
    for read in (lambda: Journal(journal_path, "audio", "fp"), lambda: read_journal_counts(journal_path)):
        with pytest.raises(ValueError, match=re.escape(f"{journal_path}: clip 'd': unknown skip kind 'no_sound'")):
            read()
    write_stage_output(output, {"stage": "audio"}, [{**skip, "kind": "no_sound"}])
    with pytest.raises(ValueError, match=re.escape(f"{output}: clip 'b': unknown skip kind 'no_sound'")):
        read_stage_output(output)
    write_status([{**row, "kind": "no_sound"}], tmp_path / "status.tsv")
    with pytest.raises(ValueError, match="status.tsv: clip 'b': unknown skip kind 'no_sound'"):
        read_status(tmp_path / "status.tsv")
