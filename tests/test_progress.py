"""Progress lines and bars (kebr/progress.py), for a media stage's clips and a training run's epochs:
the counts, weighted means, rates and ETAs they print, and the tqdm bar on a terminal only. (The
lines in a real training log: tests/test_lm_cache.py; in a real stage's log: tests/test_robust.py.)"""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch

import kebr.progress
from kebr.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(kebr.progress.time, "perf_counter", clock)
    return clock


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kebr"]


def test_a_stage_logs_clips_skips_rate_and_eta(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kebr")
    # 10 clips, 4 journaled by an earlier run: this run does 6, a line every 3 clips
    progress = Progress("asr vox/00000", 10, unit="clip", done=4, every=3, stream=io.StringIO())
    for skipped in (0, 1, 0):
        clock.now += 2.0
        progress.advance(skipped=skipped)
    assert lines(caplog) == ["asr vox/00000: 7/10 clips (1 skipped this run) | 0.50 clips/s | ETA 0:00:06"]
    for _ in range(3):
        clock.now += 20.0
        progress.advance()
    progress.log()  # the closing line: no clip since the last one, so the rate is the run's
    assert lines(caplog)[1:] == ["asr vox/00000: 10/10 clips (1 skipped this run) | 0.05 clips/s | ETA 0:00:00",
                                 "asr vox/00000: 10/10 clips (1 skipped this run) | 0.09 clips/s | ETA 0:00:00"]


def test_a_stage_logs_by_the_clock_too(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kebr")
    progress = Progress("visual d/00001", 100, unit="clip", every=50, every_s=30.0, stream=io.StringIO())
    for _ in range(4):
        clock.now += 10.0
        progress.advance()
    assert lines(caplog) == ["visual d/00001: 3/100 clips (0 skipped this run) | 0.10 clips/s | ETA 0:16:10"]


def test_training_logs_epoch_steps_weighted_means_and_both_etas(clock: Clock,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kebr")
    # 3 epochs of 4 steps, resumed after epoch 1; 2 DDP ranks; a line every 2 steps
    progress = Progress("run", 12, unit="step", done=4, every=2, terms=("loss", "l_mcc"), rate_unit="sample",
                        rate_scale=2, sections=3, stream=io.StringIO())
    progress.start_section(2, 4)
    for samples, loss in ((8, 0.5), (24, 1.0), (32, 2.0), (32, 4.0)):
        clock.now += 1.0
        progress.advance(items=samples, terms=torch.tensor([loss, 0.25], dtype=torch.float64))
    progress.end_section()
    # steps 1-2: (8 x 0.5 + 24 x 1.0) / 32 = 0.875; 64 samples x 2 ranks in 2 s; 1 s a step: 2 left in
    # the epoch, 2 + 4 in the run
    assert lines(caplog) == [
        "run epoch 2/3: 2/4 steps | loss 0.875 l_mcc 0.25 | 32.0 samples/s | ETA epoch 0:00:02, run 0:00:06",
        "run epoch 2/3: 4/4 steps | loss 3 l_mcc 0.25 | 64.0 samples/s | ETA epoch 0:00:00, run 0:00:04"]


def test_terms_may_be_numpy(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kebr")
    progress = Progress("run", 2, unit="step", every=2, terms=("loss",), rate_unit="sample", sections=1,
                        stream=io.StringIO())
    progress.start_section(1, 2)
    for loss in (1.0, 3.0):
        clock.now += 0.5
        progress.advance(items=4, terms=np.array([loss]))
    assert lines(caplog) == ["run epoch 1/1: 2/2 steps | loss 2 | 8.00 samples/s | ETA epoch 0:00:00, run 0:00:00"]


def test_a_disabled_progress_counts_but_writes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kebr")
    progress = Progress("run", 4, unit="step", every=1, terms=("loss",), sections=1, enabled=False)
    progress.start_section(1, 4)
    for _ in range(4):
        progress.advance(items=8, terms=torch.tensor([1.0]))
    progress.log()
    assert progress.done == 4 and lines(caplog) == []


def test_progress_bar_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        progress = Progress("run", 6, unit="step", every=1, terms=("loss",), rate_unit="sample", sections=2,
                            stream=stream)
        progress.start_section(1, 3)
        for _ in range(3):
            progress.advance(items=8, terms=torch.tensor([0.5]))
        progress.end_section()
        bar = stream.getvalue()
        assert ("epoch 1/2" in bar and "3/3" in bar and "loss=0.5" in bar) == shown, bar
    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        progress = Progress("asr d/00000", 5, unit="clip", done=2, stream=stream)
        for skipped in (1, 0, 0):
            progress.advance(skipped=skipped)
        progress.close()
        bar = stream.getvalue()
        assert ("asr d/00000" in bar and "5/5" in bar and "skipped=1" in bar) == shown, bar
