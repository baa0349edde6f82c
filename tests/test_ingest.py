"""Corpus layouts, speaker-disjoint splits and deterministic sharding."""

import re
from pathlib import Path

import pytest

from kebr.ingest import plan_clips, read_clip_table, write_plan


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def voxceleb2(root: Path, speakers: int = 12, per_speaker: int = 3) -> Path:
    for s in range(speakers):
        for u in range(per_speaker):
            touch(root / "dev" / "mp4" / f"id{s:05d}" / f"yt{s % 2}abcdefgh" / f"{u + 1:05d}.mp4")
    touch(root / "dev" / "aac" / "id00000" / "yt0abcdefgh" / "00001.m4a")
    return root


def test_voxceleb2_ids_audio_and_speaker_disjoint_splits(tmp_path):
    root = voxceleb2(tmp_path / "vox2")
    clips = plan_clips({"layout": "voxceleb2", "root": str(root), "subsets": ["dev"]}, seed=3,
                       shard_size=10, valid_fraction=0.25, test_fraction=0.25)
    assert len(clips) == 36
    first = clips[0]
    assert first.clip_id == "id00000/yt0abcdefgh/00001"
    assert first.audio.endswith("dev/aac/id00000/yt0abcdefgh/00001.m4a")
    assert clips[1].audio is None and clips[1].video.endswith("00002.mp4")
    splits_by_speaker = {}
    for c in clips:
        splits_by_speaker.setdefault(c.speaker, set()).add(c.split)
    assert all(len(s) == 1 for s in splits_by_speaker.values())
    assert {s for v in splits_by_speaker.values() for s in v} == {"train", "valid", "test"}
    # shards: consecutive runs of shard_size clips in id order
    assert [c.shard for c in clips].count("00000") == 10 and clips[-1].shard == "00003"
    again = plan_clips({"layout": "voxceleb2", "root": str(root), "subsets": ["dev"]}, seed=3,
                       shard_size=10, valid_fraction=0.25, test_fraction=0.25)
    assert again == clips


def test_mmsa_raw_reads_label_csv_and_rejects_split_leaks(tmp_path):
    root = tmp_path / "mosi"
    touch(root / "Raw" / "vidA" / "1.mp4")
    rows = ["video_id,clip_id,text,label,annotation,mode,label_by",
            'vidA,1,"it was great, really",2.4,Positive,train,0',
            "vidA,2,meh,-0.2,Negative,train,0",
            "vidB,1,awful film,-3.0,Negative,test,0"]
    (root / "label.csv").write_text("\n".join(rows) + "\n")
    clips = plan_clips({"layout": "mmsa_raw", "root": str(root)}, 0, 1000, 0.1, 0.1)
    assert [c.clip_id for c in clips] == ["vidA/1", "vidA/2", "vidB/1"]
    assert clips[0].text == "it was great, really" and clips[0].label == pytest.approx(2.4)
    assert [c.split for c in clips] == ["train", "train", "test"] and clips[0].speaker == "vidA"
    (root / "label.csv").write_text("\n".join(rows[:2] + ["vidA,2,meh,-0.2,Negative,valid,0"]) + "\n")
    with pytest.raises(ValueError, match="more than one split"):
        plan_clips({"layout": "mmsa_raw", "root": str(root)}, 0, 1000, 0.1, 0.1)


def test_manifest_relative_paths_and_plan_round_trip(tmp_path):
    (tmp_path / "m").mkdir()
    manifest = tmp_path / "m" / "clips.csv"
    manifest.write_text("clip_id,audio,text\nc1,a b/ü.wav,\"tab\there, \"\"quoted\"\"\"\nc2,x.wav,\n")
    clips = plan_clips({"layout": "manifest", "manifest": str(manifest)}, 0, 1, 0.0, 0.0)
    assert clips[0].audio == str(tmp_path / "m" / "a b" / "ü.wav")
    assert clips[0].text == 'tab\there, "quoted"' and clips[1].text is None
    assert clips[0].speaker == "c1" and {c.split for c in clips} == {"train"}
    shards = write_plan(clips, tmp_path / "plan")
    assert shards == ["00000", "00001"]
    assert read_clip_table(tmp_path / "plan" / "00000.tsv") == [clips[0]]


def test_manifest_needs_media_column(tmp_path):
    manifest = tmp_path / "bad.csv"
    manifest.write_text("clip_id,text\nc1,hello\n")
    with pytest.raises(ValueError, match=r"bad.csv: missing column audio or video; its columns are \['clip_id', 'text'\]"):
        plan_clips({"layout": "manifest", "manifest": str(manifest)}, 0, 10, 0.1, 0.1)


def test_voxceleb1_audio_with_face_track_folders(tmp_path):
    root = tmp_path / "vox1"
    (root).mkdir()
    (root / "vox1_meta.csv").write_text("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
                                        "id10001\tA.J._Buckley\tm\tIreland\tdev\n")
    touch(root / "wav" / "id10001" / "1zcIwhmdeo4" / "00001.wav")
    touch(root / "wav" / "id10001" / "1zcIwhmdeo4" / "00002.wav")
    face = touch(root / "unzippedIntervalFaces" / "data" / "A.J._Buckley" / "1.6" / "1zcIwhmdeo4" / "1" / "01.jpg")
    clips = plan_clips({"layout": "voxceleb1", "root": str(root)}, 0, 1000, 0.0, 0.0)
    assert [c.clip_id for c in clips] == ["id10001/1zcIwhmdeo4/00001", "id10001/1zcIwhmdeo4/00002"]
    assert clips[0].audio.endswith("00001.wav") and clips[0].video == str(face.parent)
    assert clips[1].video is None  # no face track: the visual stage records the skip
    assert {c.speaker for c in clips} == {"id10001"}


def test_non_utf8_file_names_are_kept_with_exact_media_paths(tmp_path):
    """A file name that is not UTF-8 (legal on Linux) neither fails the plan nor loses its clip: the
    media path keeps the name's bytes through the plan TSV, the clip id spells the byte as \\xff."""
    import os

    root = tmp_path / "vox2"
    speaker = root / "dev" / "mp4" / "id00001" / "ytAAAAAAAAA"
    speaker.mkdir(parents=True)
    raw = os.path.join(os.fsencode(speaker), b"0\xff1.mp4")
    with open(raw, "wb") as f:
        f.write(b"x")
    touch(speaker / "00002.mp4")
    clips = plan_clips({"layout": "voxceleb2", "root": str(root), "subsets": ["dev"]}, 0, 10, 0.0, 0.0)
    assert [c.clip_id for c in clips] == ["id00001/ytAAAAAAAAA/00002", "id00001/ytAAAAAAAAA/0\\xff1"]
    assert os.fsencode(clips[1].video) == raw
    write_plan(clips, tmp_path / "plan")
    again = read_clip_table(tmp_path / "plan" / "00000.tsv")
    assert again == clips and open(again[1].video, "rb").read() == b"x"


def test_bad_rows_name_their_file_and_line(tmp_path):
    manifest = tmp_path / "clips.csv"

    def plan(text: str):
        manifest.write_text(text)
        return plan_clips({"layout": "manifest", "manifest": str(manifest)}, 0, 10, 0.0, 0.0)

    for body, message in (("a,x.wav,1\n,y.wav,2\n", "clips.csv:3: empty clip_id"),
                          ("a,x.wav,nan\n", "clips.csv:2: label 'nan' is not a finite number"),
                          ("a,x.wav,1\nb,y.wav,-inf\n", "clips.csv:3: label '-inf' is not a finite number"),
                          ("a,x.wav,good\n", "clips.csv:2: label 'good' is not a number")):
        with pytest.raises(ValueError, match=re.escape(message)):
            plan("clip_id,audio,label\n" + body)
    with pytest.raises(ValueError, match=re.escape(f"{manifest}: missing column clip_id; its columns are "
                                                   "['id', 'audio']")):
        plan("id,audio\na,x.wav\n")
    with pytest.raises(ValueError, match=re.escape("clips.csv:2: clip a: unknown split 'training'")):
        plan("clip_id,audio,split\na,x.wav,training\n")
    assert plan("\ufeffclip_id,audio\na,x.wav\n")[0].clip_id == "a"  # a byte-order mark is not part of the name

    root = tmp_path / "mosi"
    root.mkdir()
    (root / "label.csv").write_text("video_id,clip_id,text,label\nv,1,hi,0.5\n")
    with pytest.raises(ValueError, match=r"label.csv: missing column mode; its columns are \['video_id', 'clip_id', "
                                         r"'text', 'label'\]"):
        plan_clips({"layout": "mmsa_raw", "root": str(root)}, 0, 10, 0.0, 0.0)


def test_duplicate_ids_are_reported_with_both_places_in_linear_time(tmp_path):
    import time

    from kebr.ingest import check_unique_ids

    manifest = tmp_path / "clips.csv"
    manifest.write_text("clip_id,audio\nc1,1.wav\nc2,2.wav\nc1,3.wav\nc3,4.wav\nc2,5.wav\n")
    with pytest.raises(ValueError) as error:
        plan_clips({"layout": "manifest", "manifest": str(manifest)}, 0, 1000, 0.1, 0.1)
    assert str(error.value) == (f"2 duplicate clip ids: 'c1' at {manifest}:2 and {manifest}:4; "
                                f"'c2' at {manifest}:3 and {manifest}:6")
    # 100,000 ids: about a second here; the quadratic search this replaces took a minute on 20,000.
    rows = [{"clip_id": f"id{i:07d}", "source": f"m.csv:{i + 2}"} for i in range(100_000)]
    rows.append({"clip_id": "id0000007", "source": "m.csv:100002"})
    started = time.perf_counter()
    with pytest.raises(ValueError, match="1 duplicate clip ids: 'id0000007' at m.csv:9 and m.csv:100002"):
        check_unique_ids(rows)
    assert time.perf_counter() - started < 10


def test_missing_sources_name_the_dataset_and_path(tmp_path):
    from kebr.ingest import check_sources

    with pytest.raises(FileNotFoundError, match=re.escape(f"dataset 'vox' (layout voxceleb2): subset test "
                                                          f"{voxceleb2(tmp_path / 'v') / 'test' / 'mp4'} does not exist")):
        check_sources("vox", {"layout": "voxceleb2", "root": str(tmp_path / "v"), "subsets": ["dev", "test"]})
    with pytest.raises(FileNotFoundError, match="dataset 'm' .layout manifest.: manifest /nowhere/m.csv does not exist"):
        check_sources("m", {"layout": "manifest", "manifest": "/nowhere/m.csv"})
    check_sources("vox", {"layout": "voxceleb2", "root": str(tmp_path / "v"), "subsets": ["dev"]})


def test_a_replan_changes_exactly_the_plans_of_changed_clips(tmp_path):
    """The plan holds each clip's media size and mtime: Snakemake reruns a shard whose plan bytes
    changed (`--forcerun plan`), so an edited row or a file replaced in place changes its shard's
    plan and no other."""
    import os

    media = tmp_path / "media"
    for i in range(6):
        touch(media / f"{i}.wav").write_bytes(b"RIFF" + bytes([i]) * 10)
    manifest = tmp_path / "clips.csv"
    rows = [f"c{i},media/{i}.wav,said {i}" for i in range(6)]

    def replan(lines: list[str]) -> dict[str, bytes]:
        manifest.write_text("clip_id,audio,text\n" + "\n".join(lines) + "\n")
        clips = plan_clips({"layout": "manifest", "manifest": str(manifest)}, 0, 2, 0.0, 0.0)
        for old in (tmp_path / "plan").glob("*.tsv"):
            old.unlink()
        write_plan(clips, tmp_path / "plan")
        return {p.stem: p.read_bytes() for p in sorted((tmp_path / "plan").glob("*.tsv"))}

    first = replan(rows)
    clip = read_clip_table(tmp_path / "plan" / "00001.tsv")[0]
    stat = os.stat(media / "2.wav")
    assert clip.clip_id == "c2" and clip.audio_stat == f"{stat.st_size} {stat.st_mtime_ns}" and clip.video_stat == ""
    assert replan(rows) == first  # nothing changed: the same bytes, nothing reruns
    # c1's transcript corrected (shard 00000); 3.wav replaced in place by a file of the same size (00001)
    edited = replan([r.replace("said 1", "said one") for r in rows])
    (media / "3.wav").write_bytes(b"RIFF" + b"\x09" * 10)
    os.utime(media / "3.wav", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rows = [r.replace("said 1", "said one") for r in rows]
    replaced = replan(rows)
    assert [s for s in first if edited[s] != first[s]] == ["00000"]
    assert [s for s in first if replaced[s] != edited[s]] == ["00001"]
    # a clip added at the end of the id order lands in a new last shard; a removed one changes its shard
    # (and, shards being consecutive runs in id order, every later one)
    added = replan(rows + ["c6,media/0.wav,new"])
    assert [s for s in added if added[s] != replaced.get(s)] == ["00003"]
    removed = replan(rows[:4] + rows[5:])
    assert [s for s in removed if removed[s] != replaced.get(s)] == ["00002"] and len(removed) == 3
    # a path repointed (c4 now reads 0.wav) changes its shard's plan
    repointed = replan([r.replace("media/4.wav", "media/0.wav") for r in rows])
    assert [s for s in repointed if repointed[s] != replaced[s]] == ["00002"]
