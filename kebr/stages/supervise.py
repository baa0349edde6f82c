"""A media stage (asr, audio, visual) over one shard: the journal, the supervised worker, retries and
progress (docs/ARCHITECTURE.md "How a media stage runs")."""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from kebr.asr import WORKER_ENV, needs_asr, transcribe_clips
from kebr.clips import Clip, SkipKind, input_digest
from kebr.fingerprints import stage_fingerprint
from kebr.journal import STRIKES_TO_SKIP, TRANSIENT_RUNS_TO_SKIP, Journal, write_stage_output
from kebr.model_cache import stage_model_revisions
from kebr.progress import Progress
from kebr.resources import configured_mem_mb
from kebr.stages.work import WORK
from kebr.worker import Interrupted, StopSignals, Worker, job_memory_limit_mb

log = logging.getLogger("kebr")

MEDIA_STAGES = ("asr", "audio", "visual")
RULES = {"asr": "asr", "audio": "audio_features", "visual": "visual_features"}  # each stage's Snakemake rule
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
# The parent: journal, worker supervision, retries, progress

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
        self.progress = Progress(self.label, len(clips), unit="clip", done=done,
                                 every=settings["progress_every_clips"], every_s=settings["progress_every_s"])
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
            self.progress.advance(skipped=int("error" in record))

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
