"""Plans, status tables and clips.tsv round-trip any field value, and a damaged table fails loudly
(kebr/tsv.py, the one reader and writer of kebr's TSV tables)."""

import csv
import math
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kebr.clips import Clip, SkipKind
from kebr.ingest import PLAN_FIELDS, plan_clips, read_clip_table, write_clip_table, write_plan
from kebr.stages.assemble import read_status, write_status
from kebr.stages.clips_report import write_report
from kebr.stages.status import dataset_status
from kebr.tsv import TableError, counted_rows, read_table, write_table

# Any Unicode text (control characters, \r, \n, \t, quotes, NUL included), and any bytes as a file
# name that is not UTF-8 reads them (surrogate escapes).
ANY = st.one_of(st.text(), st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")))
NONEMPTY = ANY.filter(bool)
OPTIONAL = st.one_of(st.none(), NONEMPTY)  # a plan writes None as "" (and reads "" back as None)
LABEL = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False))


# (clip_id, video, audio, text, label, split, speaker, shard, video_stat, audio_stat) of up to 6 clips with
# distinct ids, in 1 or 2 shards
CLIP_ROWS = st.lists(st.tuples(NONEMPTY, OPTIONAL, OPTIONAL, OPTIONAL, LABEL, ANY, ANY, st.sampled_from(["00000", "00001"]),
                               ANY, ANY), min_size=1, max_size=6, unique_by=lambda t: t[0])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CLIP_ROWS, ANY, st.sampled_from(["", *SkipKind]))  # a kind is "" or a SkipKind, nothing else
def test_any_field_value_round_trips_through_plan_status_and_clips_tsv(rows, reason, kind):
    clips = [Clip(i, video=v, audio=a, text=t, label=label, split=sp, speaker=spk, shard=shard, video_stat=vs,
                  audio_stat=aus) for i, v, a, t, label, sp, spk, shard, vs, aus in rows]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards = write_plan(clips, root / "plan")
        back = [c for shard in shards for c in read_clip_table(root / "plan" / f"{shard}.tsv")]
        assert sorted(back, key=lambda c: c.shard) == sorted(clips, key=lambda c: c.shard)  # exact, field by field
        assert sum(counted_rows(root / "plan" / f"{s}.tsv") for s in shards) == len(clips)
        # every read clip's values into its shard's status table, then clips.tsv
        expected = []
        for shard in shards:
            status = [{"clip_id": c.clip_id, "status": "skipped", "kind": kind, "reason": reason,
                       "missing": c.text or "", "duration_s": c.speaker, "shard": c.shard,
                       "language": c.audio or "", "language_prob": c.video or ""}
                      for c in read_clip_table(root / "plan" / f"{shard}.tsv")]
            write_status(status, root / "status" / f"{shard}.tsv")
            assert read_status(root / "status" / f"{shard}.tsv") == status
            expected += status
        write_report([root / "plan" / f"{s}.tsv" for s in shards], [root / "status" / f"{s}.tsv" for s in shards],
                     root / "clips.tsv", "tiny")
        assert read_status(root / "clips.tsv") == expected
        # what pandas, the plots or any CSV reader sees: the same values
        with (root / "clips.tsv").open(newline="", encoding="utf-8", errors="surrogateescape") as f:
            assert list(csv.DictReader(f, delimiter="\t")) == expected
        summary = read_table(root / "clips_summary.tsv", ["dataset", "status", "kind", "clips", "example_reason"])
        assert sum(int(r["clips"]) for r in summary) == len(clips)


def test_the_issues_manifest_plans_three_clips_not_five(tmp_path):
    """A carriage return inside a clip id and inside a transcript (a manifest's quoted cells)."""
    manifest = tmp_path / "clips.csv"
    manifest.write_bytes(b'clip_id,video,text,label,split\n"x\ry",x.mp4,plain,1.5,train\n'
                         b'b,b.mp4,"it was great\rreally",-2.25,test\nc,c.mp4,"two\r\nlines\n",0,valid\n')
    clips = plan_clips({"layout": "manifest", "manifest": str(manifest)}, 0, 1000, 0.0, 0.0)
    write_plan(clips, tmp_path / "plan")
    back = read_clip_table(tmp_path / "plan" / "00000.tsv")
    assert back == clips and len(back) == 3
    assert [(c.clip_id, c.text, c.label, c.split) for c in back] == [
        ("b", "it was great\rreally", -2.25, "test"), ("c", "two\r\nlines\n", 0.0, "valid"),
        ("x\ry", "plain", 1.5, "train")]
    status = dataset_status(tmp_path.parent, tmp_path.name)  # `kebr status` counts the plan's rows, not its lines
    assert status["clips"] == 3 and status["shards"] == 1


def old_plan(path: Path, clips: list[Clip]) -> None:
    """A plan as kebr wrote it before quoting every field: a lone \\r left unquoted."""
    with path.open("w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.DictWriter(f, PLAN_FIELDS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(c.to_row() for c in clips)


def test_a_damaged_plan_fails_loudly_naming_the_file_and_the_damage(tmp_path):
    clips = [Clip(f"c{i}", video=f"/m/{i}.mp4", text=f"said {i}", label=i / 2, shard="00000") for i in range(3)]
    path = tmp_path / "00000.tsv"
    write_clip_table(clips, path)
    good = path.read_bytes()
    lines = good.split(b"\n")
    assert lines[-2] == b"# 3 rows" and lines[0] == (b'"clip_id"\t"video"\t"audio"\t"text"\t"label"\t"split"\t"speaker"\t"shard"\t'
                                                 b'"video_stat"\t"audio_stat"')

    def fails(data: bytes, message: str) -> None:
        path.write_bytes(data)
        with pytest.raises(TableError, match=re.escape(message)):
            read_clip_table(path)

    fails(b"\n".join(lines[:2] + lines[3:]), f"{path}: damaged table: it says it holds 3 rows but holds 2")
    fails(b"\n".join(lines[:-2]) + b"\n", f"{path}: damaged table: its last line is not its row count")
    fails(good.replace(b'"said 1"', b'said\r1'), "damaged table: row 2 has 4 fields, not 10 (a line break or tab outside")
    fails(good.replace(b'"said 1"', b'said 1'), "line 3 is not as kebr writes it")
    fails(good.replace(b'\t"0.5"', b""), "row 2 has 9 fields, not 10")
    fails(good.replace(b'"said 1"', b'"said "1"'), "damaged table: line 3: '\t' expected after '\"'")
    fails(good.replace(b'"clip_id"', b'"id"'), "its header is ['id', ")
    fails(good.replace(b'"00000"\t""\t""\n"c2"', b'"00001"\t""\t""\n"c2"'),
          f"{path}: damaged plan: row 2 (clip 'c1') is of shard '00001', not the file's '00000'")
    old_plan(path, [Clip("x\ry", video="/m/x.mp4", shard="00000")])  # the issue: a row split by \r
    with pytest.raises(TableError, match="its last line is not its row count.*an older kebr; replan it"):
        read_clip_table(path)
    path.write_bytes(good)
    assert read_clip_table(path) == clips


def test_writing_refuses_what_cannot_come_back_and_rows_of_another_shard(tmp_path):
    with pytest.raises(ValueError, match=re.escape("row 2, column 'text': 'a\\ud800b' cannot be written")):
        write_clip_table([Clip("a", shard="00000"), Clip("b", text="a\ud800b", shard="00000")], tmp_path / "00000.tsv")
    with pytest.raises(ValueError, match="clip 'b' is of shard '00001', not the file's '00000'"):
        write_clip_table([Clip("a", shard="00000"), Clip("b", shard="00001")], tmp_path / "00000.tsv")
    assert not (tmp_path / "00000.tsv").exists()
    with pytest.raises(ValueError, match="row 1 has columns \\['x'\\]"):
        write_table(tmp_path / "t.tsv", ["a"], [{"a": 1, "x": 2}])
    long = "w" * 300_000  # past csv's default field limit of 131,072 characters
    write_clip_table([Clip("a", text=long, label=math.pi, shard="00000")], tmp_path / "00000.tsv")
    assert read_clip_table(tmp_path / "00000.tsv")[0].text == long


def test_the_report_refuses_status_tables_that_do_not_match_the_plan(tmp_path):
    clips = [Clip("a", video="a.mp4", shard="00000"), Clip("b", video="b.mp4", shard="00000")]
    write_plan(clips, tmp_path / "plan")
    row = {"status": "ok", "kind": "", "reason": "", "missing": "", "duration_s": "", "shard": "00000"}
    status = tmp_path / "status" / "00000.tsv"
    write_status([{**row, "clip_id": "a"}, {**row, "clip_id": "b"}, {**row, "clip_id": "stale"}], status)
    with pytest.raises(RuntimeError, match="the status tables hold 3 rows for the plan's 2 clips"):
        write_report([tmp_path / "plan" / "00000.tsv"], [status], tmp_path / "clips.tsv", "tiny")
    write_status([{**row, "clip_id": "a"}, {**row, "clip_id": "b", "shard": "00007"}], status)
    with pytest.raises(RuntimeError, match="clip b of shard 00000 has the status of shard 00007"):
        write_report([tmp_path / "plan" / "00000.tsv"], [status], tmp_path / "clips.tsv", "tiny")
