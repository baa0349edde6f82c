"""What a media stage's worker process runs (kebr/worker.py): the models the config names, each loaded
once per worker, and the per-clip work of the asr, audio and visual stages."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from kebr.asr import Prefetcher, make_transcriber, needs_asr, transcribe_clips
from kebr.clips import Clip, skip_record
from kebr.masking import SentimentMasker, load_vader_lexicon
from kebr.media import probe_duration, too_long
from kebr.worker import inject_fault

log = logging.getLogger("kebr")


# ---------------------------------------------------------------------------------------------
# Models (each loaded once per worker process)

def transcriber_for(config: dict[str, Any]) -> Any:
    """The ASR model (with its language ID) that ``config`` names (kebr.asr.make_transcriber)."""
    asr = config["asr"]
    return make_transcriber(backend=asr["backend"], model=asr["model"], device=asr["device"],
                            compute_type=asr["compute_type"], batch_size=asr["batch_size"],
                            beam_size=asr["beam_size"], language_id=config["language"]["id_model"])


def audio_extractor_for(config: dict[str, Any]) -> Any:
    """The audio feature extractor that ``config`` names."""
    from kebr.features.audio import AudioFeatureExtractor  # librosa: only the audio worker loads it

    a = config["audio"]
    return AudioFeatureExtractor(feature_sets=a["feature_sets"], sample_rate=a["sample_rate"],
                                 hop_length=a["hop_length"], max_frames=a["max_frames"],
                                 resample_via=a["resample_via"], resampler=a["resampler"])


def visual_extractor_for(config: dict[str, Any]) -> Any:
    """The visual feature extractor that ``config`` names."""
    from kebr.features.visual import make_visual_extractor  # mediapipe: only the visual worker loads it

    v = config["visual"]
    return make_visual_extractor(v["backend"], fps=v["fps"], max_frames=v["max_frames"],
                                 require_face=v["require_face"], openface_dir=v["openface_dir"])


def masker_for(config: dict[str, Any], tokenizer: Any) -> SentimentMasker:
    """The sentiment-word masker that ``config`` names, over ``tokenizer``."""
    text = config["text"]
    return SentimentMasker(tokenizer, lexicon=load_vader_lexicon(text["lexicon"]), max_length=text["max_length"],
                           window_before=text["window_before"], window_after=text["window_after"],
                           seed=config["seed"])


# ---------------------------------------------------------------------------------------------
# What the worker process runs: ``Work(config)`` loads the models, ``process(clips, attempt)``
# returns one record per clip (kebr/worker.py).

class AsrWork:
    """Decoding and the log-mel run in a thread one batch ahead (``prefetch``: kebr.asr.Prefetcher),
    the models in the worker's main thread."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.use_gold_text = config["asr"]["use_gold_text"]
        self.max_seconds = config["stages"]["max_clip_seconds"]
        self.transcriber = transcriber_for(config)
        self.prefetcher = Prefetcher(self.transcriber, self.max_seconds)

    def meta(self) -> dict[str, Any]:
        return {}

    def prefetch(self, clips: list[Clip], upcoming: list[Clip]) -> None:
        wanted = [c for c in [*clips, *upcoming] if needs_asr(c, self.use_gold_text)]
        self.prefetcher.keep_only({c.clip_id for c in wanted})
        self.prefetcher.request(wanted)

    def process(self, clips: list[Clip], attempt: int) -> list[dict[str, Any]]:
        for clip in clips:
            inject_fault(clip.clip_id, attempt)
        return list(transcribe_clips(clips, self.transcriber, use_gold_text=self.use_gold_text,
                                     max_seconds=self.max_seconds, prefetcher=self.prefetcher))


class _FeatureWork:
    """One clip at a time: probe the container (too long is refused before decoding), extract."""

    extractor: Any
    max_seconds: float

    def meta(self) -> dict[str, Any]:
        return {"columns": list(self.extractor.columns)}

    def media_path(self, clip: Clip) -> str | None:
        raise NotImplementedError

    def extract(self, clip: Clip) -> np.ndarray:
        raise NotImplementedError

    def process(self, clips: list[Clip], attempt: int) -> list[dict[str, Any]]:
        records = []
        for clip in clips:
            record: dict[str, Any] = {"clip_id": clip.clip_id, "duration_s": None}
            try:
                path = self.media_path(clip)
                if path is not None:
                    record["duration_s"] = probe_duration(path)
                    if (error := too_long(record["duration_s"], self.max_seconds)) is not None:
                        raise error
                inject_fault(clip.clip_id, attempt)
                record["features"] = self.extract(clip)
            except Exception as exc:  # one bad clip never kills its shard; transient ones re-raise
                record.update(skip_record(exc))
            records.append(record)
        return records


class AudioWork(_FeatureWork):
    def __init__(self, config: dict[str, Any]) -> None:
        self.max_seconds = config["stages"]["max_clip_seconds"]
        self.extractor = audio_extractor_for(config)
        self.extractor.warm()

    def media_path(self, clip: Clip) -> str | None:
        return clip.media

    def extract(self, clip: Clip) -> np.ndarray:
        return self.extractor.extract(clip, self.max_seconds)


class VisualWork(_FeatureWork):
    def __init__(self, config: dict[str, Any]) -> None:
        self.max_seconds = config["stages"]["max_clip_seconds"]
        self.reads_video = config["visual"]["backend"] != "openface_csv"
        self.extractor = visual_extractor_for(config)

    def media_path(self, clip: Clip) -> str | None:
        return clip.video if self.reads_video else None

    def extract(self, clip: Clip) -> np.ndarray:
        return self.extractor.extract(clip)


WORK = {"asr": "kebr.stages.work:AsrWork", "audio": "kebr.stages.work:AudioWork", "visual": "kebr.stages.work:VisualWork"}
