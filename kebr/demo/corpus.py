"""Write two small demo corpora in the real datasets' layouts, so the whole pipeline runs end to end.

VoxCeleb2, CMU-MOSI and CMU-MOSEI cannot be shipped, so the demo makes its own talking-head clips.
They must be real signals, not noise or drawn shapes: the visual stage runs a face detector and
landmark model, and the ASR, acoustic and language stages run speech and text models, which all
return nothing useful on synthetic patterns. So every clip is a real photograph of a face
(``skimage.data.astronaut()``) moving slightly over time, with a real spoken English opinion
sentence from eSpeak NG (``kebr.demo.tts``). Labels come from the sentences, which span strongly negative
to strongly positive, so fine-tuning has a learnable (if easy) target.

- ``<out>/voxceleb2/dev/mp4/<id000NN>/<youtube id>/<00001>.mp4``: unlabelled, several speakers, each
  with one or two source videos (the VoxCeleb2 layout, 224x224 at 25 fps).
- ``<out>/mosi/label.csv`` + ``<out>/mosi/Raw/<video_id>/<clip_id>.mp4``: labelled, the MMSA raw layout;
  train/valid/test are disjoint by video, as in CMU-MOSI.
"""

from __future__ import annotations

import csv
import itertools
import math
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage import data, transform

from kebr.media import write_clip
from kebr.demo.tts import ENGLISH_VOICES, synthesize

FPS = 25
FRAME_SIZE = 224  # VoxCeleb2's frame size
PAD_S = 0.15  # silence before and after the speech, so clips are speech duration + 0.3 s

# (sentence, sentiment label in [-3, 3]). The sentiment words ("terrible", "great", ...) carry the
# label, as in real reviews; a few sentences carry their opinion without any VADER lexicon word
# ("I walked out of the theater before the end"), which the no-sentiment-word masking path needs.
SENTENCES: tuple[tuple[str, float], ...] = (
    ("This movie was absolutely terrible and I hated every minute of it.", -3.0),
    ("Honestly the worst film I have seen in years, a total disaster.", -3.0),
    ("It is a terrible, ugly and depressing mess.", -3.0),
    ("What a horrible waste of two hours.", -2.8),
    ("The acting was awful and the story made no sense at all.", -2.6),
    ("I was bored and disappointed from start to finish.", -2.4),
    ("The dialogue was painful and the ending was just stupid.", -2.4),
    ("I really hated the main character, she was so annoying.", -2.2),
    ("I walked out of the theater before the end.", -1.8),
    ("The plot was pretty weak and the jokes fell flat.", -1.6),
    ("It was a bit too long and somewhat boring in the middle.", -1.4),
    ("The effects looked cheap and a little disappointing.", -1.4),
    ("I did not like the music very much.", -1.2),
    ("Sadly the sequel is not as good as the first one.", -1.0),
    ("The second half drags on and on.", -1.0),
    ("I expected more from such a famous director.", -0.8),
    ("The film is about two brothers who move to a small town.", 0.0),
    ("It runs for about two hours and came out last summer.", 0.0),
    ("I watched it on a Tuesday evening with my sister.", 0.0),
    ("Most of the story takes place on a ship.", 0.0),
    ("The movie has some good parts and some bad parts.", 0.0),
    ("It was just okay, nothing more.", 0.2),
    ("The ending made me want to call my parents.", 0.8),
    ("The photography is pretty and the pace is fine.", 1.0),
    ("The music was nice and the actors did a decent job.", 1.2),
    ("It was a pleasant film for a quiet weekend.", 1.2),
    ("I would watch it again with my whole family.", 1.2),
    ("I liked the story more than I expected.", 1.4),
    ("Some scenes were really funny.", 1.4),
    ("My kids laughed all the way through.", 1.6),
    ("I left the cinema smiling and I still think about it.", 2.0),
    ("A great soundtrack and a really enjoyable ride.", 2.2),
    ("It is a perfect family movie, funny and full of heart.", 2.4),
    ("What a fantastic performance by the lead actor.", 2.6),
    ("The acting was brilliant and the script is excellent.", 2.8),
    ("Honestly one of the best films I have ever seen.", 2.8),
    ("I absolutely love this director and this is her best work.", 2.8),
    ("This movie was great, I loved every single minute of it.", 3.0),
    ("An amazing film with a wonderful cast and a beautiful story.", 3.0),
    ("Everyone should go and see it, it is a masterpiece.", 3.0),
)

# astronaut() is 512x512; this region holds the face with room to move. The face centre (row, col)
# within it, and the side of the square shown in a frame, put head and shoulders in view like a
# VoxCeleb2 face track.
_PHOTO_REGION = (slice(0, 300), slice(75, 375))
_FACE_CENTRE = (135.0, 150.0)
_FACE_SIDE = 250.0

_ID_ALPHABET = np.array(list(string.ascii_letters + string.digits))

README = """\
kebr demo corpora (written by kebr.demo.corpus.write_demo_corpora)

voxceleb2/  Unlabelled pretraining corpus in the VoxCeleb2 layout:
            dev/mp4/<speaker id>/<youtube id>/<utterance>.mp4 (224x224, 25 fps, H.264 + AAC).
mosi/       Labelled fine-tuning corpus in the MMSA raw layout (CMU-MOSI):
            label.csv (video_id, clip_id, text, label, annotation, mode, label_by) and
            Raw/<video_id>/<clip_id>.mp4; train/valid/test are disjoint by video.

Every clip is a real photograph of a face (scikit-image's astronaut(), a NASA portrait) moving
slightly over time, with an English opinion sentence spoken by eSpeak NG (espeakng-loader). Each
speaker or video has its own voice, speaking rate and pitch. Labels in [-3, 3] were assigned to the
sentences by hand. The demo checks that the pipeline runs end to end on real signals; its metrics
say nothing about KEBR's accuracy on the real datasets.
"""


@dataclass(frozen=True)
class _Speaker:
    """How one speaker (VoxCeleb2) or one source video (MOSI) looks and sounds."""

    voice: str
    rate: int  # words per minute
    pitch: int  # 0-100
    zoom: float  # >1 shows more of the photo around the face
    mirror: bool
    gain: tuple[float, float, float]  # per-channel colour gain, like different cameras


def _new_speaker(rng: np.random.Generator) -> _Speaker:
    return _Speaker(
        voice=str(rng.choice(ENGLISH_VOICES)),
        rate=int(rng.integers(140, 176)),
        pitch=int(rng.integers(30, 71)),
        zoom=float(rng.uniform(0.92, 1.12)),
        mirror=bool(rng.integers(2)),
        gain=tuple(float(g) for g in rng.uniform(0.9, 1.1, size=3)),
    )


def _smooth(rng: np.random.Generator, t: np.ndarray, amplitude: float) -> np.ndarray:
    """A slow random wobble: two sinusoids of 0.1-0.7 Hz with random phases, peak about ``amplitude``."""
    freqs = rng.uniform(0.1, 0.7, size=2)
    phases = rng.uniform(0, 2 * np.pi, size=2)
    return amplitude / 2 * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None]).sum(axis=0)


def _frames(n_frames: int, speaker: _Speaker, photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``n_frames`` RGB uint8 frames of the face with smooth head-like motion (shift, zoom, tilt)."""
    t = np.arange(n_frames) / FPS
    dx, dy = _smooth(rng, t, 5.0), _smooth(rng, t, 4.0)
    zoom = speaker.zoom * (1 + _smooth(rng, t, 0.04))
    tilt = _smooth(rng, t, np.deg2rad(3.0))
    source = photo * np.asarray(speaker.gain, dtype=np.float32)
    half = FRAME_SIZE / 2
    frames = np.empty((n_frames, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    for i in range(n_frames):
        # warp() takes the map from output pixel (x, y) to photo pixel: centre the output, rotate
        # and scale, then move to the (shifted) face centre.
        scale = zoom[i] * _FACE_SIDE / FRAME_SIZE
        cos, sin = scale * math.cos(tilt[i]), scale * math.sin(tilt[i])
        cx, cy = _FACE_CENTRE[1] + dx[i], _FACE_CENTRE[0] + dy[i]
        to_photo = np.array([
            [cos, -sin, cx - cos * half + sin * half],
            [sin, cos, cy - sin * half - cos * half],
            [0.0, 0.0, 1.0],
        ])
        image = transform.warp(source, to_photo, output_shape=(FRAME_SIZE, FRAME_SIZE), order=1,
                               mode="edge", preserve_range=True)
        frames[i] = np.clip(image, 0, 255).astype(np.uint8)
    return frames[:, :, ::-1] if speaker.mirror else frames


def _write_talking_clip(path: Path, text: str, speaker: _Speaker, photo: np.ndarray,
                        rng: np.random.Generator) -> None:
    speech, sample_rate = synthesize(text, speaker.voice, speaker.rate, speaker.pitch)
    pad = np.zeros(int(PAD_S * sample_rate), dtype=np.float32)
    audio = np.concatenate([pad, speech, pad])
    n_frames = math.ceil(len(audio) / sample_rate * FPS)
    write_clip(path, _frames(n_frames, speaker, photo, rng), FPS, audio, sample_rate)


def _sentence_order(rng: np.random.Generator) -> Iterator[tuple[str, float]]:
    """The sentences, endlessly, alternating negative and non-negative so even a tiny corpus spans both."""
    negative = [s for s in SENTENCES if s[1] < 0]
    other = [s for s in SENTENCES if s[1] >= 0]
    negative = [negative[i] for i in rng.permutation(len(negative))]
    other = [other[i] for i in rng.permutation(len(other))]
    mixed = [s for pair in itertools.zip_longest(negative, other) for s in pair if s is not None]
    return itertools.cycle(mixed)


def _youtube_ids(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct 11-character YouTube-like ids (letters and digits only)."""
    ids: list[str] = []
    while len(ids) < n:
        candidate = "".join(rng.choice(_ID_ALPHABET, size=11))
        if candidate not in ids:
            ids.append(candidate)
    return ids


def _write_voxceleb2(root: Path, n_clips: int, photo: np.ndarray, rng: np.random.Generator) -> None:
    n_speakers = max(1, math.ceil(n_clips / 4))
    speakers = [_new_speaker(rng) for _ in range(n_speakers)]
    videos = [_youtube_ids(rng, int(rng.integers(1, 3))) for _ in range(n_speakers)]
    sentences = _sentence_order(rng)
    for k in range(n_clips):
        s = k % n_speakers
        utterance = k // n_speakers  # this speaker's k-th clip, spread over their videos
        youtube_id = videos[s][utterance % len(videos[s])]
        number = utterance // len(videos[s]) + 1
        path = root / "dev" / "mp4" / f"id{s + 1:05d}" / youtube_id / f"{number:05d}.mp4"
        _write_talking_clip(path, next(sentences)[0], speakers[s], photo, rng)


DIRTY_SPEAKER = "id99999"


def write_dirty_clips(folder: Path, photo: np.ndarray, rng: np.random.Generator) -> dict[str, str]:
    """The bad inputs real corpora hold (docs/DATA.md), one clip each, into ``folder``.

    Returns {file name: what is wrong with it}. Every one must end in clips.tsv as a skip with its
    reason (the Spanish clip may pass as English if the ASR is fooled: then it is an ok row).
    """
    speaker = _new_speaker(rng)
    good = folder / "00001.mp4"
    _write_talking_clip(good, "This one is fine, a perfectly good clip.", speaker, photo, rng)
    speech, sr = synthesize("I bought a coffee and it was awful.", "en-us")
    no_face = np.broadcast_to(transform.resize(data.coffee(), (FRAME_SIZE, FRAME_SIZE), preserve_range=True)
                              .astype(np.uint8), (int(len(speech) / sr * FPS) + 1, FRAME_SIZE, FRAME_SIZE, 3))
    write_clip(folder / "00002.mp4", no_face, FPS, speech, sr)
    face = _frames(50, speaker, photo, rng)
    write_clip(folder / "00003.mp4", face, FPS, np.zeros(2 * sr, dtype=np.float32), sr)
    write_clip(folder / "00004.mp4", face, FPS, None)
    (folder / "00005.mp4").write_bytes(b"")
    (folder / "00006.mp4").write_bytes(good.read_bytes()[:2048])
    spanish, sr = synthesize("El perro de mi vecino ladra toda la noche y no puedo dormir.", "es")
    write_clip(folder / "00007.mp4", _frames(int(len(spanish) / sr * FPS) + 1, speaker, photo, rng), FPS,
               spanish, sr)
    return {"00001.mp4": "good", "00002.mp4": "no face", "00003.mp4": "silence", "00004.mp4": "no audio track",
            "00005.mp4": "zero bytes", "00006.mp4": "truncated", "00007.mp4": "Spanish speech"}


def _write_mosi(root: Path, n_videos: int, clips_per_video: int, photo: np.ndarray,
                rng: np.random.Generator) -> None:
    if n_videos < 5:
        raise ValueError("demo corpus: need at least 5 labelled videos (2 valid, 2 test, 1 train)")
    video_ids = _youtube_ids(rng, n_videos)
    n_held_out = max(2, round(0.2 * n_videos))
    modes = ["test"] * n_held_out + ["valid"] * n_held_out + ["train"] * (n_videos - 2 * n_held_out)
    modes = [modes[i] for i in rng.permutation(n_videos)]
    sentences = _sentence_order(rng)
    rows = []
    for video_id, mode in zip(video_ids, modes):
        speaker = _new_speaker(rng)
        for clip_id in range(1, clips_per_video + 1):
            text, label = next(sentences)
            _write_talking_clip(root / "Raw" / video_id / f"{clip_id}.mp4", text, speaker, photo, rng)
            annotation = "Positive" if label > 0 else "Negative" if label < 0 else "Neutral"
            rows.append([video_id, clip_id, text, label, annotation, mode, 0])
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "label.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode", "label_by"])
        writer.writerows(rows)


def write_demo_corpora(out_dir: Path, seed: int = 0, n_unlabelled: int = 24, n_labelled_videos: int = 8,
                       clips_per_video: int = 4, dirty: bool = True) -> dict[str, Path]:
    """Write both demo corpora and a README under ``out_dir``.

    The same seed gives the same sentences, ids, splits, voices and motion; from a fresh process
    (``kebr demo-corpus``) the same bytes, audio (see ``kebr.demo.tts.synthesize``) and video
    (``kebr.media.write_clip``) alike. Needs ``n_labelled_videos >= 5``
    (at least 2 valid, 2 test and 1 train video).

    Returns the corpus roots as the config's ``datasets.<name>.root`` expects them:
    ``{"voxceleb2": <out>/voxceleb2, "mosi": <out>/mosi, "readme": <out>/README.txt}``.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    photo = data.astronaut()[_PHOTO_REGION].astype(np.float32)
    paths = {"voxceleb2": out_dir / "voxceleb2", "mosi": out_dir / "mosi", "readme": out_dir / "README.txt"}
    _write_voxceleb2(paths["voxceleb2"], n_unlabelled, photo, rng)
    if dirty:  # speaker DIRTY_SPEAKER: the bad inputs of docs/DATA.md, which must end as skips
        write_dirty_clips(paths["voxceleb2"] / "dev" / "mp4" / DIRTY_SPEAKER / "dirtyclips0", photo, rng)
    _write_mosi(paths["mosi"], n_labelled_videos, clips_per_video, photo, rng)
    paths["readme"].write_text(README, encoding="utf-8")
    return paths
