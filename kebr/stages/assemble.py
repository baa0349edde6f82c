"""assemble: the English filter and the masking over the stages' outputs -> the HDF5 shard and the
shard's status table."""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import kebr
from kebr.asr import Transcript
from kebr.clips import Clip, SkipKind, describe_error, error_kind, read_kind
from kebr.config import feature_stages
from kebr.fingerprints import features_fingerprint, stage_fingerprint
from kebr.ingest import (  # readable: reasons name files; a non-UTF-8 name is spelled \xNN in UTF-8 tables
    readable,
)
from kebr.journal import read_stage_output
from kebr.language import english_decision, filter_settings
from kebr.masking import load_tokenizer
from kebr.model_cache import stage_model_revisions
from kebr.tsv import read_table, write_table

log = logging.getLogger("kebr")
from kebr.stages.supervise import check_error_fraction
from kebr.stages.work import masker_for

# language, language_prob: the language the language model detected and its probability, for every
# clip it heard (skipped or not); "" where no model identified it (gold text, language.id_model none,
# the clip's audio unreadable): the English filter's evidence, next to the kind it gave.
STATUS_FIELDS = ["clip_id", "status", "kind", "reason", "missing", "duration_s", "shard", "language", "language_prob"]
VERSIONED_LIBRARIES = ("numpy", "torch", "transformers", "h5py", "av", "librosa", "opensmile",
                       "mediapipe", "faster-whisper", "openai-whisper", "vaderSentiment")


# ---------------------------------------------------------------------------------------------
# assemble

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


def _duration(*records: dict[str, Any]) -> str:
    """The clip's media duration from the first stage that probed it ("" when none could)."""
    for record in records:
        if record.get("duration_s") is not None:
            return f"{record['duration_s']:.3f}"
    return ""


def run_assemble(config: dict[str, Any], dataset: str, shard: str, clips: list[Clip], asr_path: Path,
                 audio_path: Path, visual_path: Path, out_shard: Path, out_status: Path) -> None:
    """English filter + masking + features -> the HDF5 shard and the shard's status table.

    A clip is skipped when any stage failed on it, except a labelled valid/test clip with its gold
    transcript (``Clip.kept_whole``): the test set must stay the corpus's official one, so a missing
    audio or visual stream (no face, silence, unreadable media...) becomes zero frames (an all-false
    frame mask in training) and the clip is ``ok`` with the modality named in ``missing``.
    """
    from kebr.shards import ShardRow, write_shard  # imports torch: only the assemble job pays for it

    outputs = {}
    for stage, path in (("asr", asr_path), ("audio", audio_path), ("visual", visual_path)):
        meta, records = read_stage_output(path)
        producer = stage if stage in feature_stages(config, dataset) else "mmsa_import"
        expected = stage_fingerprint(config, producer, dataset)
        if meta.get("fingerprint") != expected:
            raise ValueError(f"{path} was made under another config (fingerprint {meta.get('fingerprint')}, the "
                             f"config's {producer} keys give {expected}): rerun the {producer} stage of this shard")
        outputs[stage] = (meta, records)
    transcripts = outputs["asr"][1]
    (audio_meta, audio), (visual_meta, visual) = outputs["audio"], outputs["visual"]
    text, lang = config["text"], config["language"]
    tokenizer = load_tokenizer(text["model"])
    masker = masker_for(config, tokenizer)

    rows: list[ShardRow] = []
    status: list[dict[str, str]] = []
    own_errors: list[str] = []  # assemble's own unexpected errors, for the error fraction
    for clip in clips:
        failures: list[tuple[SkipKind, str]] = []  # (kind, reason) of the text
        record = transcripts[clip.clip_id]
        masked = None
        detected = {"language": "", "language_prob": ""}
        if "error" in record:
            failures.append((record["kind"], _reason("asr", record["error"])))
        else:
            transcript = Transcript.from_json(record)
            if transcript.language_model is not None:
                detected = {"language": transcript.language, "language_prob": f"{transcript.language_prob:.3f}"}
            dropped = english_decision(transcript, **filter_settings(lang))
            if dropped:
                failures.append((dropped.kind, dropped.reason))
            else:
                try:
                    masked = masker(transcript.text, clip.clip_id)
                except Exception as exc:
                    failures.append((error_kind(exc), describe_error(exc)))
                    if error_kind(exc) == SkipKind.UNEXPECTED:
                        own_errors.append(describe_error(exc))
        streams = {"audio": audio[clip.clip_id], "visual": visual[clip.clip_id]}
        media = {stage: (r["kind"], _reason(stage, r["error"]))
                 for stage, r in streams.items() if "error" in r}
        duration = _duration(streams["audio"], record, streams["visual"])
        missing = list(media) if clip.kept_whole and not failures else []
        if failures or (media and not missing):
            failures += list(media.values())
            reasons = dict.fromkeys(reason for _, reason in failures)  # one unreadable file fails every stage alike
            status.append({"clip_id": clip.clip_id, "status": "skipped", "kind": failures[0][0],
                           "reason": readable("; ".join(reasons)), "missing": "", "duration_s": duration,
                           "shard": shard, **detected})
            continue
        # A missing stream has no frame: zero length, so an all-false frame mask in training.
        features = {stage: np.zeros((0, len(meta["columns"])), np.float32) if stage in missing
                    else streams[stage]["features"] for stage, meta in (("audio", audio_meta), ("visual", visual_meta))}
        rows.append(ShardRow(clip_id=clip.clip_id, split=clip.split, speaker=clip.speaker, label=clip.label,
                             transcript=record, masked=masked, audio=features["audio"], visual=features["visual"]))
        status.append({"clip_id": clip.clip_id, "status": "ok", "kind": media[missing[0]][0] if missing else "",
                       "reason": readable("; ".join(media[m][1] for m in missing)), "missing": ",".join(missing),
                       "duration_s": duration, "shard": shard, **detected})
    errors = [{"kind": SkipKind.UNEXPECTED, "error": e} for e in own_errors]
    check_error_fraction(f"assemble {dataset}/{shard}", errors + [{}] * (len(clips) - len(errors)),
                         config["datasets"][dataset]["max_error_fraction"])

    # The versions of every model that made the shard (the stage outputs' meta, checked above to match
    # this config's fingerprints): training refuses shards of two versions (kebr/shards.py).
    models = {**outputs["asr"][0].get("models", {}), **visual_meta.get("models", {}),
              **stage_model_revisions(config, "assemble")}
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
                       "text_model": text["model"], "models": models})
    write_status(status, out_status)


# ---------------------------------------------------------------------------------------------
# status tables, clips.tsv, clips_summary.tsv

def write_status(rows: list[dict[str, str]], path: Path) -> None:
    """A status table or clips.tsv (kebr/tsv.py: every value reads back exactly)."""
    write_table(path, STATUS_FIELDS, rows)


def read_status(path: Path) -> list[dict[str, str]]:
    """A status table or clips.tsv; each ``kind`` as its SkipKind ("" for a clean ``ok``), so a kind
    this code does not know fails here."""
    rows = read_table(path, STATUS_FIELDS)
    for row in rows:
        if row["kind"]:
            row["kind"] = read_kind(row["kind"], f"{path}: clip {row['clip_id']!r}")
    return rows
