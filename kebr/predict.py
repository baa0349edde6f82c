"""Sentiment of new videos with a fine-tuned run: ASR -> features -> KEBR, the same chain as training.

The run directory holds ``feature_config.json`` (the feature settings of the shards it was trained
on), so new clips are transcribed and featurised exactly as its training clips were. A clip that
cannot be read, has no speech, no face, or is not English gets an error row with the reason; the
others get a score in [-3, 3] (MOSI/MOSEI scale).

Precision: on CUDA the model runs under bf16 autocast exactly when the run evaluated that way
(``finetune.eval_amp``, stored with the run's weights), unless ``amp`` says otherwise; on the CPU it
runs in fp32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from kebr.asr import Transcript, transcribe_clips
from kebr.clips import Clip, ClipError, describe_error
from kebr.config import validate_config
from kebr.language import english_decision, filter_settings
from kebr.masking import load_tokenizer
from kebr.model import KEBR
from kebr.shards import encode_raw_text, pad_frames, pad_ids
from kebr.stages.work import audio_extractor_for, transcriber_for, visual_extractor_for
from kebr.train.checkpoint import load_weights, read_configs


def evaluated_with_amp(state_dir: Path) -> bool:
    """Whether a fine-tuning state's run evaluated under autocast (``finetune.eval_amp``)."""
    _, train_config = read_configs(state_dir)
    return bool(train_config.get("amp", True) and train_config.get("eval_amp", True))


class Predictor:
    def __init__(self, run_dir: str | Path, device: str = "cpu", amp: bool | None = None):
        run_dir = Path(run_dir)
        marker = run_dir / "feature_config.json"
        if not marker.exists():
            raise FileNotFoundError(f"{run_dir} is not a finished fine-tuning run (no feature_config.json)")
        feature_config = json.loads(marker.read_text())
        if "mmsa_pickle" in feature_config:  # kebr/mmsa.py: features someone else computed
            raise ValueError(f"{run_dir} was fine-tuned on the features of the MMSA pickle "
                             f"{feature_config['mmsa_pickle']['path']}, which kebr cannot compute for new videos")
        self.config = validate_config({**feature_config, "datasets": {}})
        self.config["asr"]["use_gold_text"] = False
        state = (run_dir / "best").resolve()
        model_config, _ = read_configs(state)
        self.model = KEBR.from_config(model_config)
        load_weights(state, self.model)
        self.model.eval().to(device)
        self.device = device
        self.amp = evaluated_with_amp(state) if amp is None else amp
        self.tokenizer = load_tokenizer(model_config["text_model"])
        self.transcriber = transcriber_for(self.config)
        self.audio = audio_extractor_for(self.config)
        self.visual = visual_extractor_for(self.config)
        self.audio.warm()

    def transcribe(self, clip: Clip) -> str:
        record = next(transcribe_clips([clip], self.transcriber, use_gold_text=False))
        if "error" in record:
            raise ClipError(record["error"], kind=record["kind"])
        dropped = english_decision(Transcript.from_json(record), **filter_settings(self.config["language"]))
        if dropped:
            raise ClipError(dropped.reason, kind=dropped.kind)
        return record["text"]

    @torch.no_grad()
    def score(self, path: str | Path) -> dict[str, Any]:
        clip = Clip(clip_id=str(path), video=str(path))
        try:
            text = self.transcribe(clip)
            audio, visual = self.audio.extract(clip), self.visual.extract(clip)
        except Exception as exc:
            return {"clip": str(path), "error": describe_error(exc)}
        length = self.config["text"]["max_length"]
        ids, attention = pad_ids([encode_raw_text(self.tokenizer, text, length)], length,
                                 self.tokenizer.pad_token_id)
        a, a_len = pad_frames([audio], self.config["audio"]["max_frames"], audio.shape[1])
        v, v_len = pad_frames([visual], self.config["visual"]["max_frames"], visual.shape[1])
        tensor = lambda x: torch.from_numpy(x).to(self.device)  # noqa: E731
        frames = lambda n, total: (torch.arange(total) < int(n[0]))[None].to(self.device)  # noqa: E731
        device_type = torch.device(self.device).type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.amp and device_type == "cuda"):
            out = self.model(input_ids=tensor(ids).long(), attention_mask=tensor(attention),
                             audio=tensor(a), audio_mask=frames(a_len, a.shape[1]),
                             video=tensor(v), video_mask=frames(v_len, v.shape[1]))
        return {"clip": str(path), "score": round(float(out["prediction"][0]), 4), "text": text}


def predict_videos(paths: Sequence[str | Path], run_dir: str | Path, device: str = "cpu",
                   amp: bool | None = None) -> list[dict[str, Any]]:
    predictor = Predictor(run_dir, device=device, amp=amp)
    return [predictor.score(p) for p in paths]
