"""Poison clips, hangs, kills, signals, flaky storage and broken environments, each through the real
CLI command of a stage (`kebr visual`, `kebr audio`, `kebr asr`) on real media.

The faults are injected by the test hook KEBR_TEST_FAULTS (kebr/worker.py ``inject_fault``): the real
stage runs, its worker process loads the real models, and at the named clip the worker segfaults,
hangs, exits, is SIGKILLed with its whole job, or raises.
"""

import errno
import json
import os
import random
import re
import resource
import signal
import struct
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from skimage import data

from kebr.clips import Clip, ClipError, SkipKind, input_digest
from kebr.config import load_config
from kebr.fingerprints import stage_fingerprint
from kebr.demo.corpus import write_dirty_clips
from kebr.ingest import read_clip_table, write_clip_table
from kebr.journal import read_stage_output
from kebr.stages.supervise import CRASHED_TWICE, StageFailed, check_error_fraction

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
ENV.pop("KEBR_TEST_FAULTS", None)

CONFIG = """results: out
datasets:
  tiny: {layout: manifest, manifest: media/clips.csv}
stages: {clip_timeout_s: 60, transient_retries: 1, retry_backoff_s: 0.05}
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    media = root / "media"
    write_dirty_clips(media, data.astronaut()[0:300, 75:375].astype(np.float32), np.random.default_rng(0))
    (media / "clips.csv").write_text("clip_id,video\n")  # the config's manifest; plans are written by hand
    (root / "config.yaml").write_text(CONFIG)
    # a short limit for the hang test (what a hang costs); generous for the rest, so a loaded machine
    # cannot make a good clip time out
    (root / "hang.yaml").write_text(CONFIG.replace("clip_timeout_s: 60", "clip_timeout_s: 5"))
    return root


def plan(root: Path, name: str, clips: dict[str, str], **fields) -> Path:
    """A shard plan of clips {clip_id: media file name under media/}."""
    path = root / "out" / "tiny" / "plan" / f"{name}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_clip_table([Clip(cid, video=str(root / "media" / f), shard=name, **fields) for cid, f in clips.items()],
                     path)
    return path


def stage(root: Path, name: str, plan_path: Path, faults: str = "", config: str = "config.yaml",
          **kw) -> subprocess.CompletedProcess:
    out = root / "out" / "tiny" / name / f"{plan_path.stem}.h5"
    env = {**ENV, "KEBR_TEST_FAULTS": faults} if faults else ENV
    return subprocess.run([sys.executable, "-m", "kebr", name, "--config", config, "--dataset", "tiny",
                           "--plan", str(plan_path), "--out", str(out)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300, **kw)


def output(root: Path, name: str, plan_path: Path) -> dict:
    return read_stage_output(root / "out" / "tiny" / name / f"{plan_path.stem}.h5")[1]


def journal(root: Path, name: str, plan_path: Path) -> Path:
    return root / "out" / "tiny" / name / f"{plan_path.stem}.h5.journal"


GOOD = "00001.mp4"  # a talking face with speech


def test_crash_hang_and_exit_cost_only_their_clip(corpus):
    shard = plan(corpus, "00001", {"a": GOOD, "seg": GOOD, "hang": GOOD, "ex": GOOD, "b": GOOD})
    result = stage(corpus, "visual", shard, "seg:segv,hang:hang,ex:exit3", config="hang.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    records = output(corpus, "visual", shard)
    assert records["seg"]["error"] == "crashed the worker (SIGSEGV)" and records["seg"]["kind"] == SkipKind.CRASHED_WORKER
    assert records["ex"]["error"] == "crashed the worker (exit code 3)" and records["ex"]["kind"] == SkipKind.CRASHED_WORKER
    assert records["hang"]["error"] == "timed out after 5 s" and records["hang"]["kind"] == SkipKind.TIMEOUT
    # the clips after each crash ran in a fresh worker and got the real features of the same video
    np.testing.assert_array_equal(records["a"]["features"], records["b"]["features"])
    assert records["a"]["features"][:, 0].min() == 1.0 and records["a"]["duration_s"] == pytest.approx(3.1, abs=0.1)
    assert "worker starts: 4" in result.stderr  # the first, and one after each of the three bad clips
    assert re.search(r"visual tiny/00001: 5/5 clips \(3 skipped this run\) \| [\d.]+ clips/s \| ETA 0:00:00",
                     result.stderr)  # progress: rate, ETA
    meta, _ = read_stage_output(corpus / "out" / "tiny" / "visual" / "00001.h5")
    config = load_config(corpus / "hang.yaml")
    assert meta["fingerprint"] == stage_fingerprint(config, "visual", "tiny")
    assert meta["fingerprint"] != stage_fingerprint(load_config(corpus / "config.yaml"), "visual", "tiny")
    assert not journal(corpus, "visual", shard).exists()


def test_asr_batch_crash_lands_on_the_clip_that_caused_it(corpus):
    # the bad clip last: after the split, the clips before it share one fresh worker (Whisper loads 2 times)
    shard = plan(corpus, "00002", {"s1": GOOD, "s3": "00002.mp4", "nosound": "00004.mp4", "bad": "00002.mp4"})
    clips = read_clip_table(shard)  # plus a clip with gold text: answered by the parent, no worker
    write_clip_table([*clips, replace(clips[0], clip_id="gold", text="a gold transcript")], shard)
    result = stage(corpus, "asr", shard, "bad:segv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "a batch of 4 clips crashed the worker (SIGSEGV); running them one at a time" in result.stderr
    assert "worker starts: 2" in result.stderr
    records = output(corpus, "asr", shard)
    assert records["bad"]["error"] == "crashed the worker (SIGSEGV)"
    assert "fine" in records["s1"]["text"].lower() and "coffee" in records["s3"]["text"].lower()
    assert records["nosound"]["kind"] == SkipKind.NO_AUDIO_STREAM
    assert records["gold"]["source"] == "gold" and records["gold"]["duration_s"] is None


def test_a_clip_that_kills_its_whole_job_is_skipped_after_two_deaths(corpus):
    shard = plan(corpus, "00003", {"a": GOOD, "k": GOOD, "b": GOOD})
    path = journal(corpus, "visual", shard)
    start_k = json.dumps({"start": ["k"], "inputs": [input_digest(read_clip_table(shard)[1])]})
    first = stage(corpus, "visual", shard, "k:killjob")
    assert first.returncode == -signal.SIGKILL and path.read_text().endswith(start_k + "\n")
    # one death is not proof (a node can go away, a user can kill -9): k runs again, and kills again
    second = stage(corpus, "visual", shard, "k:killjob")
    assert second.returncode == -signal.SIGKILL and path.read_text().count(start_k) == 2
    last = stage(corpus, "visual", shard, "k:killjob")
    assert last.returncode == 0, last.stderr[-3000:]
    records = output(corpus, "visual", shard)
    assert "error" not in records["a"] and "error" not in records["b"]
    assert records["k"] == {"clip_id": "k", "duration_s": None, "error": CRASHED_TWICE, "kind": SkipKind.CRASHED_WORKER}


def test_sigterm_is_an_interruption_not_a_crash(corpus):
    shard = plan(corpus, "00004", {"a": GOOD, "h": GOOD, "b": GOOD})
    path = journal(corpus, "visual", shard)
    env = {**ENV, "KEBR_TEST_FAULTS": "h:hang"}
    proc = subprocess.Popen([sys.executable, "-m", "kebr", "visual", "--config", "config.yaml", "--dataset", "tiny",
                             "--plan", str(shard), "--out", str(shard.parents[1] / "visual" / "00004.h5")],
                            cwd=corpus, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (path.exists() and '"start": ["h"]' in path.read_text()):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # as SLURM does: every process of the job
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert json.loads(path.read_text().splitlines()[-1]) == {"close": ["h"], "why": "interrupted"}
    result = stage(corpus, "visual", shard)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all("error" not in r for r in output(corpus, "visual", shard).values())


def test_transient_errors_are_retried_then_fail_the_job_without_skips(corpus):
    shard = plan(corpus, "00005", {"a": GOOD, "gpu": GOOD, "nfs": GOOD})
    # the CUDA error happens once and the retry passes; the EIO persists past transient_retries
    failed = stage(corpus, "visual", shard, "gpu:cuda@0,nfs:eio")
    assert failed.returncode == 1
    assert f"transient error on gpu ({corpus / 'media' / GOOD}) (RuntimeError: CUDA error" in failed.stderr
    assert (f"a transient error on nfs ({corpus / 'media' / GOOD}) persisted after 1 retries (OSError: [Errno 5]"
            in failed.stderr)
    assert "worker starts" not in failed.stderr and failed.stderr.count("worker (pid") == 2  # fresh after the GPU error
    assert not (shard.parents[1] / "visual" / "00005.h5").exists()
    text = journal(corpus, "visual", shard).read_text()
    assert '"clip_id": "gpu"' in text and '"clip_id": "nfs"' not in text  # nothing journaled as skipped
    fixed = stage(corpus, "visual", shard)  # the storage is back
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert all("error" not in r for r in output(corpus, "visual", shard).values())


def test_a_broken_environment_fails_the_shard_loudly_and_its_clips_are_retried(corpus):
    shard = plan(corpus, "00006", {"a": GOOD, "u1": GOOD, "u2": GOOD, "b": GOOD})
    failed = stage(corpus, "visual", shard, "u1:boom,u2:boom")
    assert failed.returncode == 1
    assert ("2 of 4 clips (50%) hit unexpected errors, more than max_error_fraction=0.2. Most common: "
            "2 x ValueError: test fault: something unexpected") in failed.stderr
    assert not (shard.parents[1] / "visual" / "00006.h5").exists()
    fixed = stage(corpus, "visual", shard)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert "2 already journaled" in fixed.stderr  # a and b were kept; u1 and u2 ran again
    assert all("error" not in r for r in output(corpus, "visual", shard).values())


def test_error_fraction_counts_only_unexpected_errors():
    ok, skip, bad = {}, {"kind": SkipKind.NO_FACE, "error": "no face"}, {"kind": SkipKind.UNEXPECTED, "error": "E"}
    check_error_fraction("s", [bad] + [ok] * 4, 0.2)  # 20% is not more than 20%
    check_error_fraction("s", [skip] * 9 + [ok], 0.2)  # content skips never count
    with pytest.raises(StageFailed, match="2 x E"):
        check_error_fraction("s", [bad, bad] + [ok] * 3, 0.2)


def write_long_clips(media: Path) -> None:
    """A 2-hour FLAC in Matroska (silence compresses to ~130 kB), and a copy whose header lies that it
    lasts 5 s."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono:n=16384", "-t", "7200",
                    "-c:a", "flac", str(media / "two_hours.mkv")], check=True)
    raw = bytearray((media / "two_hours.mkv").read_bytes())
    at = raw.find(b"\x44\x89\x88")  # Segment Info Duration, an 8-byte float in milliseconds
    assert struct.unpack(">d", raw[at + 3 : at + 11]) == (7.2e6,)
    raw[at + 3 : at + 11] = struct.pack(">d", 5000.0)
    (media / "liar.mkv").write_bytes(bytes(raw))


MEASURE = """import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


def test_two_hour_clips_are_refused_without_decoding_them(corpus):
    write_long_clips(corpus / "media")
    shard = plan(corpus, "00007", {"long": "two_hours.mkv", "liar": "liar.mkv", "a": GOOD})
    out = shard.parents[1] / "audio" / "00007.h5"
    # the peak memory of the stage's processes (the largest one: its worker), measured from outside
    result = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "kebr", "audio", "--config",
                             "config.yaml", "--dataset", "tiny", "--plan", str(shard), "--out", str(out)],
                            cwd=corpus, env=ENV, capture_output=True, text=True, timeout=300)
    peak_kb, code = map(int, result.stdout.split())
    assert code == 0, result.stderr[-3000:]
    records = output(corpus, "audio", shard)
    assert records["long"]["kind"] == SkipKind.TOO_LONG and records["long"]["duration_s"] == 7200.0
    assert records["long"]["error"] == "media: 7200 s is longer than max_clip_seconds=900"
    assert records["liar"]["kind"] == SkipKind.TOO_LONG and records["liar"]["duration_s"] == 5.0
    assert "audio runs past max_clip_seconds=900 (the container says 5 s); decoding stopped there" in records["liar"]["error"]
    assert "error" not in records["a"]
    # 2 h at 22,050 Hz float32 would be 635 MB (twice that while concatenated); 900 s is 79 MB
    assert peak_kb < 750_000, peak_kb
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0  # (the measurement is of the children)


def test_unreadable_special_files_and_storage_errors_are_told_apart(tmp_path):
    from kebr.clips import is_transient
    from kebr.media import load_audio

    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)  # would block a decoder forever
    with pytest.raises(ClipError, match="not a regular file") as caught:
        load_audio(fifo, 16000)
    assert caught.value.kind == SkipKind.UNREADABLE
    assert is_transient(OSError(errno.ESTALE, "Stale file handle"))
    assert is_transient(RuntimeError("CUDA failed with error out of memory"))
    assert not is_transient(OSError(errno.ENOENT, "No such file"))
    assert not is_transient(ValueError("CUDA is mentioned but this is a ValueError"))


def corrupt_mkv(media: Path, size: int = 58) -> Path:
    """A real Matroska file (the good test clip, remuxed) cut to ``size`` bytes: PyAV raises EIO on it."""
    whole = media / "whole.mkv"
    if not whole.exists():
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(media / GOOD), "-c", "copy",
                        str(whole)], check=True)
    cut = media / f"cut{size}.mkv"
    cut.write_bytes(whole.read_bytes()[:size])
    return cut


def test_ffmpeg_eio_on_a_file_that_reads_whole_is_its_content_not_the_storage(corpus):
    import av

    from kebr.clips import describe_error, error_kind, is_transient
    from kebr.media import load_audio, probe_duration, read_frames

    for size in (58, 100, 500):  # every cut FFmpeg answers with EIO
        cut = corrupt_mkv(corpus / "media", size)
        with pytest.raises(av.error.OSError) as raw:
            av.open(str(cut))
        assert raw.value.errno == errno.EIO and raw.value.filename == str(cut)  # what FFmpeg says: EIO
        assert not is_transient(raw.value) and error_kind(raw.value) == SkipKind.UNREADABLE
        for read in (probe_duration, lambda p: load_audio(p, 16000), lambda p: read_frames(p, 6.0, 5)):
            with pytest.raises(ClipError) as caught:
                read(cut)
            assert caught.value.kind == SkipKind.UNREADABLE
            assert describe_error(caught.value) == (
                f"media: not a readable media file (OSError: [Errno 5] Input/output error: '{cut}'); FFmpeg reported "
                f"an I/O error, but {cut} stats and reads whole ({size} bytes), so its content is corrupt, not the "
                "storage")
    # The same error where the evidence fails stays transient: a file that stats but does not read
    # (the kernel answers EIO for /proc/self/mem at offset 0), a file gone, a folder; and an EIO from
    # Python's own reads (not FFmpeg) on a healthy file.
    for path in ("/proc/self/mem", str(corpus / "media" / "gone.mkv"), str(corpus / "media")):
        assert is_transient(av.error.OSError(errno.EIO, "Input/output error", path)), path
    assert is_transient(OSError(errno.EIO, "Input/output error", str(cut)))
    assert is_transient(av.error.OSError(errno.EIO, "Input/output error"))  # no file named: no evidence


def test_a_damaged_header_is_a_content_error_never_an_unexpected_one(corpus):
    """Seeded damage to the first 600 bytes of a real Matroska file: every clip that fails, fails as its
    content (a ClipError: unreadable or no video stream), never as a crash of the reader (some headers
    leave FFmpeg a stream without a decoder, which used to raise AttributeError: "unexpected")."""
    from kebr.media import read_frames

    whole = corrupt_mkv(corpus / "media").with_name("whole.mkv").read_bytes()
    rng, kinds = random.Random(0), set()
    damaged = corpus / "media" / "damaged.mkv"
    for _ in range(150):
        data = bytearray(whole)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(0, 600)] = rng.randrange(256)
        damaged.write_bytes(bytes(data))
        try:
            read_frames(damaged, 6.0, 5)
        except ClipError as exc:
            kinds.add(exc.kind)
    assert kinds <= {SkipKind.UNREADABLE, SkipKind.NO_VIDEO_STREAM} and SkipKind.UNREADABLE in kinds


def test_a_corrupt_file_ffmpeg_calls_eio_is_skipped_at_once_naming_the_file(corpus):
    cut = corrupt_mkv(corpus / "media")
    shard = plan(corpus, "00008", {"a": GOOD, "cut": cut.name, "b": GOOD})
    result = stage(corpus, "audio", shard)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transient" not in result.stderr  # no retry, no backoff: the first run finishes the shard
    records = output(corpus, "audio", shard)
    assert records["cut"]["kind"] == SkipKind.UNREADABLE
    assert str(cut) in records["cut"]["error"] and "its content is corrupt, not the storage" in records["cut"]["error"]
    assert "error" not in records["a"] and "error" not in records["b"]


def test_a_transient_error_in_two_job_runs_skips_its_clip_not_the_shard(corpus):
    shard = plan(corpus, "00009", {"a": GOOD, "nfs": GOOD, "b": GOOD})
    path = journal(corpus, "visual", shard)
    first = stage(corpus, "visual", shard, "nfs:eio")
    assert first.returncode == 1
    assert f"a transient error on nfs ({corpus / 'media' / GOOD}) persisted after 1 retries" in first.stderr
    assert "(job run 1; a clip whose error persists in 2 runs is skipped)" in first.stderr
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[-1] == {"transient": ["nfs"], "reason": "OSError: [Errno 5] Input/output error (test fault)",
                         "inputs": [input_digest(read_clip_table(shard)[1])]}
    second = stage(corpus, "visual", shard, "nfs:eio")  # the error is still there: the shard completes
    assert second.returncode == 0, second.stderr[-3000:]
    records = output(corpus, "visual", shard)
    assert records["nfs"] == {"clip_id": "nfs", "duration_s": None, "kind": SkipKind.PERSISTENT_ERROR,
                              "error": f"OSError: [Errno 5] Input/output error (test fault) (on nfs "
                                       f"({corpus / 'media' / GOOD}): persisted through 1 retries in each of 2 job "
                                       "runs)"}
    assert "error" not in records["a"] and "error" not in records["b"]


def test_a_killed_jobs_records_of_since_changed_inputs_are_redone(corpus):
    import shutil

    media = corpus / "media"
    for name in ("fixed_a.mp4", "fixed_b.mp4", "fixed_k.mp4"):
        shutil.copy(media / GOOD, media / name)
    shard = plan(corpus, "00010", {"a": "fixed_a.mp4", "b": "fixed_b.mp4", "k": "fixed_k.mp4"}, label=1.0)
    killed = stage(corpus, "audio", shard, "k:killjob")  # a and b journaled, then the job dies on k
    assert killed.returncode == -signal.SIGKILL
    assert journal(corpus, "audio", shard).read_text().count('"input": ') == 2
    # The corpus is fixed while the job is down: a's file replaced in place by one without audio (not
    # replanned), b's label corrected in the plan. Their records were made from the old inputs.
    shutil.copy(media / "00004.mp4", media / "fixed_a.mp4")
    clips = read_clip_table(shard)
    write_clip_table([replace(c, label=-1.0) if c.clip_id == "b" else c for c in clips], shard)
    rerun = stage(corpus, "audio", shard)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert ("3 clips, 0 already journaled (1 whole-job deaths on record); 2 journaled from an input that has "
            "changed since (plan row or media): redone") in rerun.stderr
    records = output(corpus, "audio", shard)
    assert records["a"]["kind"] == SkipKind.NO_AUDIO_STREAM  # the new file, not the old features
    assert "error" not in records["b"] and "error" not in records["k"]
    assert all("input" not in r for r in records.values())  # the digest is the journal's, not the output's


def test_an_asr_batch_that_failed_a_job_goes_clip_by_clip_and_only_the_bad_clip_is_skipped(corpus):
    shard = plan(corpus, "00011", {"s1": GOOD, "nfs": GOOD, "s3": "00002.mp4"})  # one ASR batch of 3
    first = stage(corpus, "asr", shard, "nfs:eio")
    assert first.returncode == 1 and "a transient error on s1 (" in first.stderr  # the batch as a whole
    second = stage(corpus, "asr", shard, "nfs:eio")  # the batch split: s1 done, nfs fails the job alone
    assert second.returncode == 1 and "a transient error on nfs (" in second.stderr and "(job run 1;" in second.stderr
    third = stage(corpus, "asr", shard, "nfs:eio")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "1 already journaled" in third.stderr
    records = output(corpus, "asr", shard)
    assert records["nfs"]["kind"] == SkipKind.PERSISTENT_ERROR and "in each of 2 job runs" in records["nfs"]["error"]
    assert "fine" in records["s1"]["text"].lower() and "coffee" in records["s3"]["text"].lower()


MEMORY = CONFIG + "resources: {mem_mb: {visual_features: 1200, asr: 1600}}\n"


def too_large_peak(record: dict, limit_mb: int) -> int:
    """The peak a too_large record gives, checked against the job's limit it names."""
    assert record["kind"] == SkipKind.TOO_LARGE, record
    match = re.search(r"worker reached (\d+) MB resident, over the (\d+) MB the job's (\d+) MB leave it",
                      record["error"])
    assert match, record["error"]
    peak, share, job = map(int, match.groups())
    assert job == limit_mb and 0 < limit_mb - share < 400  # the parent's own share: a Python with numpy
    # killed soon after passing its share: the bloat fault touches 16 MB per 10 ms, the parent looks every 50 ms
    assert share < peak < share + 400
    return peak


def test_a_clip_over_the_jobs_memory_is_skipped_as_too_large_with_its_peak(corpus):
    (corpus / "memory.yaml").write_text(MEMORY)
    shard = plan(corpus, "00020", {"a": GOOD, "big": GOOD, "b": GOOD})
    result = stage(corpus, "visual", shard, "big:bloat", config="memory.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    records = output(corpus, "visual", shard)
    too_large_peak(records["big"], 1200)
    assert records["big"]["duration_s"] is None
    # the other clips of the shard finished, in a fresh worker after the kill
    np.testing.assert_array_equal(records["a"]["features"], records["b"]["features"])
    assert "worker starts: 2" in result.stderr
    # the same clip without the fault, and the healthy clips, fit: the limit spares a healthy worker
    alone = plan(corpus, "00021", {"big": GOOD})
    assert stage(corpus, "visual", alone, config="memory.yaml").returncode == 0
    np.testing.assert_array_equal(output(corpus, "visual", alone)["big"]["features"], records["a"]["features"])


def test_an_asr_batch_over_the_jobs_memory_goes_clip_by_clip_and_only_its_bad_clip_is_too_large(corpus):
    (corpus / "memory.yaml").write_text(MEMORY)
    shard = plan(corpus, "00022", {"s1": GOOD, "big": GOOD, "s3": "00002.mp4"})  # one ASR batch of 3
    result = stage(corpus, "asr", shard, "big:bloat", config="memory.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "a batch of 3 clips needed more memory than the job has" in result.stderr
    records = output(corpus, "asr", shard)
    too_large_peak(records["big"], 1600)
    assert "fine" in records["s1"]["text"].lower() and "coffee" in records["s3"]["text"].lower()
