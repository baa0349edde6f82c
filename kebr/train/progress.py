"""Progress of a training run that you can watch while it runs.

Every ``every`` steps one log line (logger "kebr", so it lands in the rule's log file):

    results/pretrain/vox1/full epoch 3/200 step 150/4125: loss 0.6312 l_task 0.5201 l_mcc 0.2222
        cos_a 0.1041 cos_v 0.0502 | 812.4 samples/s | ETA epoch 0:08:10, run 1 day, 2:31:10

The loss terms are sample-weighted means over the steps since the previous line (rank 0's batches
under DDP; the epoch row of log.csv averages every rank); samples/s counts every rank. The ETA
divides the wall time since this process started training (evaluation and checkpoints included) by
the steps it has done. On a terminal a tqdm bar per epoch shows the same numbers; log lines are then
written through tqdm so the bar stays at the bottom. ``every = 0``: only the epoch lines of ``fit``.
Reading a loss value waits for the GPU, so it happens on log steps only.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import ExitStack
from datetime import timedelta
from typing import Any, Sequence, TextIO

import torch

log = logging.getLogger("kebr")


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


class Progress:
    def __init__(self, name: str, *, terms: Sequence[str], epochs: int, steps_per_epoch: int, every: int,
                 world_size: int = 1, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.name, self.terms = name, tuple(terms)
        self.epochs, self.steps_per_epoch, self.every = epochs, steps_per_epoch, every
        self.world_size, self.enabled = world_size, enabled
        self.stream = sys.stderr if stream is None else stream
        self.bar_enabled = enabled and self.stream.isatty()
        self.started: float | None = None
        self.steps_done = 0  # in this process, over all epochs
        self.epoch = 0
        self._stack: ExitStack | None = None
        self.bar: Any = None

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.step_in_epoch = epoch, 0
        self._reset_window()
        if self.started is None:
            self.started = time.perf_counter()
        if self.bar_enabled:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._stack = ExitStack()
            self.bar = self._stack.enter_context(tqdm(total=self.steps_per_epoch, file=self.stream, leave=False,
                                                      desc=f"epoch {epoch}/{self.epochs}", unit="step",
                                                      dynamic_ncols=True))
            self._stack.enter_context(logging_redirect_tqdm())  # the root logger's console handler

    def _reset_window(self) -> None:
        self.window: torch.Tensor | None = None
        self.window_samples = 0
        self.window_started = time.perf_counter()

    def step(self, terms: torch.Tensor, samples: int) -> None:
        """One optimizer step: ``terms`` (len(self.terms),) batch means (detached), ``samples`` in the batch."""
        self.steps_done += 1
        self.step_in_epoch += 1
        if not self.enabled:
            return
        weighted = terms.detach() * samples
        self.window = weighted if self.window is None else self.window + weighted
        self.window_samples += samples
        if self.bar is not None:
            self.bar.update(1)
        if self.every and self.step_in_epoch % self.every == 0:
            self._report()

    def _report(self) -> None:
        now = time.perf_counter()
        means = (self.window / self.window_samples).tolist()
        rate = self.window_samples * self.world_size / max(now - self.window_started, 1e-9)
        per_step = (now - self.started) / self.steps_done
        left_in_epoch = max(self.steps_per_epoch - self.step_in_epoch, 0)
        left = left_in_epoch + self.steps_per_epoch * (self.epochs - self.epoch)
        values = " ".join(f"{k} {v:.4g}" for k, v in zip(self.terms, means))
        log.info("%s epoch %d/%d step %d/%d: %s | %.1f samples/s | ETA epoch %s, run %s", self.name, self.epoch,
                 self.epochs, self.step_in_epoch, self.steps_per_epoch, values, rate,
                 _duration(left_in_epoch * per_step), _duration(left * per_step))
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in zip(self.terms[:3], means)} | {"samples/s": f"{rate:.1f}"})
        self._reset_window()

    def end_epoch(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self.bar = None, None
