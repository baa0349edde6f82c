"""The per-shard stages the Snakemake rules run: each reads one shard's plan and writes one file.

asr, audio and visual are independent (they run in parallel, ASR on a GPU node when there is one);
assemble joins them with the English filter and the masking into the HDF5 shard and the shard's
status table; report gathers every shard's status into clips.tsv and clips_summary.tsv.

How a media stage (asr, audio, visual) runs on one shard (``run_media_stage``): what is skipped as
what, retried or fatal is docs/corpora.md "Bad input, crashes and kills"; how the parent, its
supervised worker (kebr/worker.py) and the journal (kebr/journal.py) do it is docs/ARCHITECTURE.md
"How a media stage runs".
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import kebr
from kebr.asr import WORKER_ENV, Prefetcher, Transcript, make_transcriber, needs_asr, transcribe_clips
from kebr.clips import Clip, SkipKind, describe_error, error_kind, input_digest, read_kind, skip_record
from kebr.config import feature_stages
from kebr.fingerprints import features_fingerprint, stage_fingerprint
from kebr.ingest import read_clip_table, readable  # readable: reasons name files; a non-UTF-8 name is spelled \xNN in UTF-8 tables
from kebr.journal import STRIKES_TO_SKIP, TRANSIENT_RUNS_TO_SKIP, Journal, read_stage_output, write_stage_output
from kebr.language import english_decision, filter_settings
from kebr.masking import SentimentMasker, load_tokenizer, load_vader_lexicon
from kebr.media import probe_duration, too_long
from kebr.model_cache import stage_model_revisions
from kebr.resources import configured_mem_mb
from kebr.tsv import read_table, write_table
from kebr.worker import Interrupted, StopSignals, Worker, inject_fault, job_memory_limit_mb

log = logging.getLogger("kebr")

# language, language_prob: the language the language model detected and its probability, for every
# clip it heard (skipped or not); "" where no model identified it (gold text, language.id_model none,
# the clip's audio unreadable): the English filter's evidence, next to the kind it gave.
STATUS_FIELDS = ["clip_id", "status", "kind", "reason", "missing", "duration_s", "shard", "language", "language_prob"]
SUMMARY_FIELDS = ["dataset", "status", "kind", "clips", "example_reason"]
MEDIA_STAGES = ("asr", "audio", "visual")
RULES = {"asr": "asr", "audio": "audio_features", "visual": "visual_features"}  # each stage's Snakemake rule
VERSIONED_LIBRARIES = ("numpy", "torch", "transformers", "h5py", "av", "librosa", "opensmile",
                       "mediapipe", "faster-whisper", "openai-whisper", "vaderSentiment")
# Worker outcomes that are the clip's (a batch with one goes clip by clip), and their skip kinds.
OUTCOME_KINDS = {"crashed": SkipKind.CRASHED_WORKER, "timeout": SkipKind.TIMEOUT, "too_large": SkipKind.TOO_LARGE}
CRASHED_TWICE = ("crashed the worker (the whole job died twice while this clip was being processed; "
                 "no exit status)")


class StageFailed(RuntimeError):
    """A shard that must not pass as done: too many unexpected errors, or a transient error that
    persisted. The job exits non-zero; the journal keeps the finished clips for the rerun."""


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".journal")


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


WORK = {"asr": "kebr.stages:AsrWork", "audio": "kebr.stages:AudioWork", "visual": "kebr.stages:VisualWork"}


# ---------------------------------------------------------------------------------------------
# The parent: journal, worker supervision, retries, progress

class ClipProgress:
    """A stage's clips done / skipped / clips per second / ETA, logged every N clips or M seconds; a
    tqdm bar instead when stderr is a terminal. (A training run's steps and losses: kebr/train/progress.py.)"""

    def __init__(self, label: str, total: int, done: int, every_clips: int, every_s: float) -> None:
        self.label, self.total, self.done = label, total, done
        self.every_clips, self.every_s = every_clips, every_s
        self.skipped = 0
        self.started = self.last_time = time.monotonic()
        self.done_at_start = self.last_done = done
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=label, unit="clip", file=sys.stderr)

    def add(self, record: dict[str, Any]) -> None:
        self.done += 1
        self.skipped += "error" in record
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(skipped=self.skipped, refresh=False)
            return
        now = time.monotonic()
        if self.done - self.last_done >= self.every_clips or now - self.last_time >= self.every_s:
            self.log()

    def log(self) -> None:
        now = time.monotonic()
        rate = (self.done - self.done_at_start) / max(now - self.started, 1e-9)
        left = self.total - self.done
        eta = f"{left / rate:.0f} s" if rate > 0 else "unknown"
        log.info("%s: %d/%d clips done (%d skipped this run), %.2f clips/s, ETA %s", self.label, self.done,
                 self.total, self.skipped, rate, eta)
        self.last_time, self.last_done = now, self.done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _files(clips: list[Clip]) -> str:
    """Clips named with their media files, for messages that must say which file failed."""
    return ", ".join(f"{c.clip_id} ({', '.join(p for p in (c.video, c.audio) if p) or 'no media'})" for c in clips)


def check_error_fraction(label: str, records: list[dict[str, Any]], max_fraction: float) -> None:
    """Fail when more than ``max_fraction`` of the clips hit unexpected errors: a broken environment
    must not pass as a corpus of bad clips."""
    errors = [r["error"] for r in records if r.get("kind") == SkipKind.UNEXPECTED]
    if errors and len(errors) > max_fraction * len(records):
        common = "; ".join(f"{n} x {text[:300]}" for text, n in Counter(errors).most_common(3))
        raise StageFailed(f"{label}: {len(errors)} of {len(records)} clips ({len(errors) / len(records):.0%}) hit "
                          f"unexpected errors, more than max_error_fraction={max_fraction:g}. Most common: {common}. "
                          "Fix the cause and rerun: the clips with unexpected errors are retried.")


class _ShardRun:
    """One media stage on one shard (see the module docstring)."""

    def __init__(self, stage: str, config: dict[str, Any], dataset: str, clips: list[Clip], out: Path) -> None:
        settings = config["stages"]
        self.stage, self.config, self.clips, self.out = stage, config, clips, out
        self.label = f"{stage} {dataset}/{out.stem}"
        self.timeout_s = settings["clip_timeout_s"]
        self.retries, self.backoff_s = settings["transient_retries"], settings["retry_backoff_s"]
        self.max_error_fraction = config["datasets"][dataset]["max_error_fraction"]
        # A first attempt's mem_mb, not a retry's multiple: whether a clip is too_large must not depend
        # on how often its job ran (a cgroup's smaller limit wins where there is one)
        self.job_mem_mb = job_memory_limit_mb(configured_mem_mb(config, RULES[stage], dataset))
        self.fingerprint = stage_fingerprint(config, stage, dataset)
        self.models = stage_model_revisions(config, stage)  # the model versions in that fingerprint, for the meta
        # each clip's plan row and media size and mtime now: records made from other inputs are redone
        inputs = {c.clip_id: input_digest(c) for c in clips}
        self.journal = Journal(journal_path(out), stage, self.fingerprint, inputs)
        done = sum(c.clip_id in self.journal for c in clips)
        stale = len(self.journal.stale & inputs.keys())
        log.info("%s: %d clips, %d already journaled%s%s", self.label, len(clips), done,
                 f" ({sum(self.journal.strikes.values())} whole-job deaths on record)" if self.journal.strikes else "",
                 f"; {stale} journaled from an input that has changed since (plan row or media): redone" if stale else "")
        self.progress = ClipProgress(self.label, len(clips), done, settings["progress_every_clips"],
                                 settings["progress_every_s"])
        self.in_flight: list[str] = []

    def groups(self) -> tuple[list[list[Clip]], list[Clip]]:
        """(groups of clips the worker processes together, clips the parent answers itself)."""
        if self.stage != "asr":
            return [[c] for c in self.clips], []
        asr = self.config["asr"]
        needs = [c for c in self.clips if needs_asr(c, asr["use_gold_text"])]
        gold = [c for c in self.clips if not needs_asr(c, asr["use_gold_text"])]
        size = asr["batch_size"] if asr["backend"] == "faster-whisper" else 1
        # Fixed cuts in plan order: a rerun batches as the first run did (CTranslate2's int8 kernels
        # give slightly different numbers for another batch composition).
        return [needs[i : i + size] for i in range(0, len(needs), size)], gold

    def upcoming(self, groups: list[list[Clip]], k: int) -> list[Clip]:
        """ASR: the clips of the next group with work left, which the worker decodes while it runs group k."""
        if self.stage != "asr":
            return []
        for group in groups[k + 1 :]:
            if rest := [c for c in group if c.clip_id not in self.journal]:
                return rest
        return []

    def run(self) -> None:
        journal = self.journal
        started = time.perf_counter()
        groups, parent_clips = self.groups()
        env = WORKER_ENV if self.stage == "asr" else None
        with (StopSignals() as stop,
              Worker(WORK[self.stage], (self.config,), stop, self.stage, env, self.job_mem_mb) as worker):
            self.stop, self.worker = stop, worker
            try:
                for record in transcribe_clips([c for c in parent_clips if c.clip_id not in journal], None,
                                               self.config["asr"]["use_gold_text"]):
                    self._finish([record])
                for k, group in enumerate(groups):
                    remaining = [c for c in group if c.clip_id not in journal]
                    if not remaining:
                        continue
                    ids = tuple(c.clip_id for c in group)
                    if (len(remaining) < len(group) or journal.strikes.get(ids, 0) >= STRIKES_TO_SKIP
                            or (len(group) > 1 and journal.transient.get(ids, 0))):
                        for clip in remaining:  # a batch that crashed or failed a job before goes clip by clip
                            self._task([clip])
                    else:
                        self._task(remaining, self.upcoming(groups, k))
                if journal.meta is None:
                    journal.set_meta({} if self.stage == "asr" else worker.start())
            except Interrupted as exc:
                if self.in_flight:
                    journal.close(self.in_flight, "interrupted")
                journal.close_file()
                log.warning("%s: %s; %d clips in flight journaled as interrupted (retried on restart, not skipped)",
                            self.label, exc, len(self.in_flight))
                raise
            finally:
                self.progress.close()
        self._write()
        log.info("%s: done in %.1f s (worker starts: %d, %.1f s)", self.label, time.perf_counter() - started,
                 worker.starts, worker.start_seconds)

    def _finish(self, records: list[dict[str, Any]]) -> None:
        if len(records) == 1:
            self.journal.append(records[0])
        else:
            self.journal.append_batch(records)
        self.in_flight = []
        for record in records:
            self.progress.add(record)

    def _task(self, task: list[Clip], upcoming: list[Clip] | None = None) -> None:
        ids = [c.clip_id for c in task]
        if len(task) == 1 and self.journal.strikes.get(tuple(ids), 0) >= STRIKES_TO_SKIP:
            log.warning("%s: clip %s: %s", self.label, ids[0], CRASHED_TWICE)
            self._finish([{"clip_id": ids[0], "duration_s": None, "error": CRASHED_TWICE,
                           "kind": SkipKind.CRASHED_WORKER}])
            return
        attempt = 0
        while True:
            meta = self.worker.start()  # before the start mark: a kill during model load strikes no clip
            if self.stage != "asr":
                self.journal.set_meta(meta)
            self.stop.check()
            self.journal.start(ids)
            self.in_flight = ids
            outcome = self.worker.run(task, self.timeout_s * len(task), attempt, upcoming)
            if outcome.status == "done":
                self._finish(outcome.records)
                return
            if outcome.status in OUTCOME_KINDS:
                if len(task) > 1:
                    log.warning("%s: a batch of %d clips %s; running them one at a time", self.label, len(task),
                                outcome.reason)
                    self.journal.close(ids, "split")
                    self.in_flight = []
                    for clip in task:
                        self._task([clip])
                    return
                log.warning("%s: clip %s %s", self.label, ids[0], outcome.reason)
                kind = OUTCOME_KINDS[outcome.status]
                self._finish([{"clip_id": ids[0], "duration_s": None, "error": outcome.reason, "kind": kind}])
                return
            # transient: nothing about these clips is known; they are retried, and skipped only when
            # the error outlasts the retries of two job runs (kebr/journal.py)
            self.journal.close(ids, "interrupted")
            self.in_flight = []
            if attempt >= self.retries:
                runs = self.journal.transient_failed(ids, outcome.reason)
                if len(task) == 1 and runs >= TRANSIENT_RUNS_TO_SKIP:
                    reason = (f"{outcome.reason} (on {_files(task)}: persisted through {self.retries} retries in "
                              f"each of {runs} job runs)")
                    log.warning("%s: clip %s skipped: %s", self.label, ids[0], reason)
                    self._finish([{"clip_id": ids[0], "duration_s": None, "error": reason,
                                   "kind": SkipKind.PERSISTENT_ERROR}])
                    return
                raise StageFailed(f"{self.label}: a transient error on {_files(task)} persisted after {self.retries} "
                                  f"retries ({outcome.reason}); failing the job so it is retried later (job run "
                                  f"{runs}; a clip whose error persists in {TRANSIENT_RUNS_TO_SKIP} runs is skipped)")
            delay = self.backoff_s * 2**attempt
            log.warning("%s: transient error on %s (%s); retry %d of %d in %.0f s", self.label, _files(task),
                        outcome.reason, attempt + 1, self.retries, delay)
            self.stop.sleep(delay)
            attempt += 1

    def _write(self) -> None:
        journal = self.journal
        missing = [c.clip_id for c in self.clips if c.clip_id not in journal]
        if missing:
            raise RuntimeError(f"{self.label}: no record for {len(missing)} clips, e.g. {missing[:3]}")
        records = [journal.records[c.clip_id] for c in self.clips]
        self.progress.log()
        try:
            check_error_fraction(self.label, records, self.max_error_fraction)
        except StageFailed:
            journal.close_file()
            raise
        meta = {**(journal.meta or {}), "stage": self.stage, "fingerprint": self.fingerprint}
        if self.models:
            meta["models"] = self.models
        if self.stage == "asr":
            meta.update(backend=self.config["asr"]["backend"], model=self.config["asr"]["model"],
                        language_id=self.config["language"]["id_model"])
        write_stage_output(self.out, meta, records)
        journal.remove()


def run_media_stage(stage: str, config: dict[str, Any], dataset: str, clips: list[Clip], out: Path) -> None:
    """Run one media stage (asr, audio, visual) over one shard's clips into ``out``."""
    if stage not in MEDIA_STAGES:
        raise ValueError(f"unknown media stage {stage!r}: one of {MEDIA_STAGES}")
    _ShardRun(stage, config, dataset, clips, out).run()


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


def clips_summary_rows(rows: list[dict[str, str]], dataset: str) -> list[dict[str, Any]]:
    """clips_summary.tsv rows: clips per (status, kind), most first, each with one example reason."""
    counts = Counter((r["status"], r["kind"]) for r in rows)
    example: dict[tuple[str, str], str] = {}
    for r in rows:
        example.setdefault((r["status"], r["kind"]), r["reason"])
    order = sorted(counts, key=lambda key: (key[0] != "ok", -counts[key], key[1]))
    return [{"dataset": dataset, "status": s, "kind": k, "clips": counts[(s, k)], "example_reason": example[(s, k)]}
            for s, k in order]


def write_report(plan_tables: list[Path], status_tables: list[Path], out: Path, dataset: str,
                 summary: Path | None = None) -> dict[str, int]:
    """``clips.tsv``: every planned clip with its status; ``clips_summary.tsv`` (``summary``, by
    default beside it): counts per status and kind. A planned clip with no status is an error, not
    a silent loss."""
    tables = [read_status(path) for path in status_tables]
    status = {row["clip_id"]: row for table in tables for row in table}
    rows, counts = [], {"ok": 0, "skipped": 0}
    for path in plan_tables:
        for clip in read_clip_table(path):
            if clip.clip_id not in status:
                raise RuntimeError(f"clip {clip.clip_id} of shard {clip.shard} has no status: rerun its shard")
            if status[clip.clip_id]["shard"] != clip.shard:
                raise RuntimeError(f"clip {clip.clip_id} of shard {clip.shard} has the status of shard "
                                   f"{status[clip.clip_id]['shard']}: rerun both shards' assemble")
            rows.append(status[clip.clip_id])
            counts[status[clip.clip_id]["status"]] += 1
    if sum(map(len, tables)) != len(rows):  # a status row of no planned clip (or twice): a stale or damaged table
        raise RuntimeError(f"the status tables hold {sum(map(len, tables))} rows for the plan's {len(rows)} clips: "
                           "rerun the assemble of the shards whose plan changed")
    write_table(summary or out.with_name("clips_summary.tsv"), SUMMARY_FIELDS, clips_summary_rows(rows, dataset))
    write_status(rows, out)
    return counts
