"""The per-shard stages the Snakemake rules run: each reads one shard's plan and writes one file.

asr, audio and visual are independent (they run in parallel, ASR on a GPU node when there is one);
assemble joins them with the English filter and the masking into the HDF5 shard and the shard's
status table. Every stage records a failure per clip, never per shard, and journals finished clips
(kebr/journal.py) so that a killed job resumes where it stopped.
"""

from __future__ import annotations

import csv
import logging
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable


import kebr
from kebr.clips import Clip, describe_error
from kebr.journal import Journal, decode_array, encode_array, read_stage_output, write_stage_output

log = logging.getLogger("kebr")

STATUS_FIELDS = ["clip_id", "status", "reason", "shard"]
VERSIONED_LIBRARIES = ("numpy", "torch", "transformers", "h5py", "av", "librosa", "opensmile",
                       "mediapipe", "faster-whisper", "openai-whisper", "vaderSentiment")


def _run_journaled(clips: list[Clip], out: Path, meta: Callable[[], dict[str, Any]],
                   process: Callable[[list[Clip]], Any]) -> None:
    """Run ``process`` over the clips the journal lacks, then write ``out`` in plan order.

    ``process`` yields one record per clip it is given (``{"clip_id", ...}`` or ``{"clip_id",
    "error"}``); each is journaled the moment it exists.
    """
    journal = Journal(out.with_name(out.name + ".journal"))
    todo = [c for c in clips if c.clip_id not in journal]
    log.info("%s: %d clips, %d already journaled", out, len(clips), len(clips) - len(todo))
    started = time.perf_counter()
    for record in process(todo) if todo else ():
        journal.append(record)
    missing = [c.clip_id for c in clips if c.clip_id not in journal]
    if missing:
        raise RuntimeError(f"stage produced no record for {len(missing)} clips, e.g. {missing[:3]}")
    write_stage_output(out, meta(), [journal.records[c.clip_id] for c in clips])
    journal.remove()
    log.info("%s: done in %.1f s", out, time.perf_counter() - started)


def make_transcriber(config: dict[str, Any]) -> Any:
    from kebr.asr import make_transcriber

    asr = config["asr"]
    return make_transcriber(backend=asr["backend"], model=asr["model"], device=asr["device"],
                            compute_type=asr["compute_type"], batch_size=asr["batch_size"],
                            beam_size=asr["beam_size"], language_id=config["language"]["id_model"])


def make_audio_extractor(config: dict[str, Any]) -> Any:
    from kebr.features.audio import AudioFeatureExtractor

    a = config["audio"]
    return AudioFeatureExtractor(feature_sets=a["feature_sets"], sample_rate=a["sample_rate"],
                                 hop_length=a["hop_length"], max_frames=a["max_frames"],
                                 resample_via=a["resample_via"])


def make_visual_extractor(config: dict[str, Any]) -> Any:
    from kebr.features.visual import make_visual_extractor

    v = config["visual"]
    return make_visual_extractor(v["backend"], fps=v["fps"], max_frames=v["max_frames"],
                                 require_face=v["require_face"], openface_dir=v["openface_dir"])


def make_masker(config: dict[str, Any], tokenizer: Any) -> Any:
    from kebr.masking import SentimentMasker, load_vader_lexicon

    text = config["text"]
    return SentimentMasker(tokenizer, lexicon=load_vader_lexicon(text["lexicon"]), max_length=text["max_length"],
                           window_before=text["window_before"], window_after=text["window_after"],
                           seed=config["seed"])


def run_asr(config: dict[str, Any], clips: list[Clip], out: Path) -> None:
    from kebr.asr import needs_asr, transcribe_clips

    asr = config["asr"]

    def process(todo: list[Clip]):  # type: ignore[no-untyped-def]
        # The model loads only when some clip lacks a gold transcript.
        transcriber = make_transcriber(config) if any(needs_asr(c, asr["use_gold_text"]) for c in todo) else None
        yield from transcribe_clips(todo, transcriber, use_gold_text=asr["use_gold_text"])

    _run_journaled(clips, out, lambda: {"stage": "asr", "backend": asr["backend"], "model": asr["model"],
                                        "language_id": config["language"]["id_model"]}, process)


def _run_features(extractor: Any, clips: list[Clip], out: Path, stage: str) -> None:
    def process(todo: list[Clip]):  # type: ignore[no-untyped-def]
        if hasattr(extractor, "warm"):
            extractor.warm()
        for clip in todo:
            try:
                yield {"clip_id": clip.clip_id, "features": encode_array(extractor.extract(clip))}
            except Exception as exc:  # one bad clip never kills its shard
                yield {"clip_id": clip.clip_id, "error": describe_error(exc)}

    _run_journaled(clips, out, lambda: {"stage": stage, "columns": list(extractor.columns)}, process)


def run_audio(config: dict[str, Any], clips: list[Clip], out: Path) -> None:
    _run_features(make_audio_extractor(config), clips, out, "audio")


def run_visual(config: dict[str, Any], clips: list[Clip], out: Path) -> None:
    _run_features(make_visual_extractor(config), clips, out, "visual")


def library_versions() -> dict[str, str]:
    versions = {"kebr": kebr.__version__}
    for name in VERSIONED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _reason(stage: str, error: str) -> str:
    """A stage's error as a skip reason: prefixed with the stage unless it names its own origin."""
    return error if error.split(":")[0] in (stage, "media") else f"{stage}: {error}"


def run_assemble(config: dict[str, Any], dataset: str, shard: str, clips: list[Clip], asr_path: Path,
                 audio_path: Path, visual_path: Path, out_shard: Path, out_status: Path) -> None:
    from kebr.config import features_fingerprint
    from kebr.language import english_filter, filter_settings
    from kebr.masking import load_tokenizer
    from kebr.shards import ShardRow, write_shard

    text, lang = config["text"], config["language"]
    tokenizer = load_tokenizer(text["model"])
    masker = make_masker(config, tokenizer)
    from kebr.asr import Transcript

    _, transcripts = read_stage_output(asr_path)
    audio_meta, audio = read_stage_output(audio_path)
    visual_meta, visual = read_stage_output(visual_path)

    rows: list[ShardRow] = []
    status: list[dict[str, str]] = []
    for clip in clips:
        reasons: list[str] = []
        record = transcripts[clip.clip_id]
        masked = None
        if "error" in record:
            reasons.append(_reason("asr", record["error"]))
        else:
            transcript = Transcript.from_json(record)
            dropped = english_filter(transcript, **filter_settings(lang))
            if dropped:
                reasons.append(dropped)
            else:
                try:
                    masked = masker(transcript.text, clip.clip_id)
                except Exception as exc:
                    reasons.append(describe_error(exc))
        for stage, records in (("audio", audio), ("visual", visual)):
            if "error" in records[clip.clip_id]:
                reasons.append(_reason(stage, records[clip.clip_id]["error"]))
        if reasons:
            reason = "; ".join(dict.fromkeys(reasons))  # one unreadable file fails every stage alike
            status.append({"clip_id": clip.clip_id, "status": "skipped", "reason": reason, "shard": shard})
            continue
        rows.append(ShardRow(clip_id=clip.clip_id, split=clip.split, speaker=clip.speaker, label=clip.label,
                             transcript=record, masked=masked,
                             audio=decode_array(audio[clip.clip_id]["features"]),
                             visual=decode_array(visual[clip.clip_id]["features"])))
        status.append({"clip_id": clip.clip_id, "status": "ok", "reason": "", "shard": shard})

    feature_config = {k: config[k] for k in ("seed", "asr", "language", "text", "audio", "visual")}
    if "mmsa_pickle" in audio_meta:  # imported features (kebr/mmsa.py): their source, not our extractors
        feature_config["mmsa_pickle"] = audio_meta["mmsa_pickle"]
    # An imported stream keeps its own frame count (an MMSA pickle's T); extracted ones the config's.
    write_shard(out_shard, rows, audio_columns=audio_meta["columns"], visual_columns=visual_meta["columns"],
                audio_frames=audio_meta.get("max_frames", config["audio"]["max_frames"]),
                visual_frames=visual_meta.get("max_frames", config["visual"]["max_frames"]),
                text_length=text["max_length"], tokenizer=tokenizer,
                attrs={"dataset": dataset, "shard": shard, "kebr_version": kebr.__version__,
                       "fingerprint": features_fingerprint(config, dataset),
                       "library_versions": library_versions(), "feature_config": feature_config,
                       "text_model": text["model"]})
    write_status(status, out_status)


def write_status(rows: list[dict[str, str]], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, STATUS_FIELDS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def read_status(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def write_report(plan_tables: list[Path], status_tables: list[Path], out: Path) -> dict[str, int]:
    """``clips.tsv``: every planned clip with its status. A planned clip with no status is an error,
    not a silent loss."""
    from kebr.ingest import read_clip_table

    status = {row["clip_id"]: row for path in status_tables for row in read_status(path)}
    rows, counts = [], {"ok": 0, "skipped": 0}
    for path in plan_tables:
        for clip in read_clip_table(path):
            if clip.clip_id not in status:
                raise RuntimeError(f"clip {clip.clip_id} of shard {clip.shard} has no status: rerun its shard")
            rows.append(status[clip.clip_id])
            counts[status[clip.clip_id]["status"]] += 1
    write_status(rows, out)
    return counts
