"""Progress that you can watch while a job runs: one class for a media stage's clips and a training
run's steps.

A log line (logger "kebr", so it lands in the rule's log file) every ``every`` units or ``every_s``
seconds, whichever comes first (0 turns either off), and one more on ``log()``:

    asr voxceleb2/00042: 500/1000 clips (12 skipped this run) | 2.31 clips/s | ETA 0:03:36
    results/pretrain/vox1/full epoch 3/200: 150/4125 steps | loss 0.6312 l_task 0.5201 l_mcc 0.2222
        cos_a 0.1041 cos_v 0.0502 | 812.4 samples/s | ETA epoch 0:08:10, run 1 day, 2:31:10

A training run counts its steps in sections, one per epoch: the count is the epoch's and the ETA is
given for the epoch and for the whole run. ``terms`` are per-unit values (loss terms) shown as means
weighted by each unit's ``items`` (samples) since the previous line; they may be tensors on a GPU,
which are read only when a line is written. The rate counts ``items`` per second since the previous
line (since this process started when no unit was done in between), times ``rate_scale`` (the DDP
world size: every rank's samples). The ETA divides the wall time since this process started by the
units it has done (evaluation and checkpoints of earlier epochs included), so a resumed job counts
from where it resumed. On a terminal a tqdm bar (per section, when there are sections) shows the same
numbers, and the log lines are written through it so the bar stays at the bottom.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import ExitStack
from datetime import timedelta
from typing import Any, Sequence, TextIO

log = logging.getLogger("kebr")


def duration(seconds: float) -> str:
    """Whole seconds as H:MM:SS (with days when there are any)."""
    return str(timedelta(seconds=int(seconds)))


class Progress:
    def __init__(self, label: str, total: int, *, unit: str, done: int = 0, every: int = 0, every_s: float = 0.0,
                 terms: Sequence[str] = (), rate_unit: str | None = None, rate_scale: int = 1,
                 sections: int = 0, stream: TextIO | None = None, enabled: bool = True) -> None:
        """``total`` units in the whole job, ``done`` of them before this process started; ``sections``
        epochs of it, if any (the ETA is then the epoch's and the run's)."""
        self.label, self.total, self.unit, self.sections = label, total, unit, sections
        self.every, self.every_s = every, every_s
        self.terms, self.rate_unit, self.rate_scale = tuple(terms), rate_unit or unit, rate_scale
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.bar_enabled = enabled and self.stream.isatty()
        self.done = done
        self.done_here = 0  # units done by this process
        self.skipped = 0  # units skipped by this process (clips with an error record)
        self.items_here = 0
        self.started = time.perf_counter()
        self.section: tuple[int, int] | None = None  # (index, units in it)
        self.in_section = 0
        self._stack: ExitStack | None = None
        self.bar: Any = None
        self._reset_window()
        if self.bar_enabled and not sections:
            self._open_bar(total, done, label)

    def _reset_window(self) -> None:
        self.window: Any = None
        self.window_units = self.window_items = 0
        self.window_started = time.perf_counter()

    def _open_bar(self, total: int, initial: int, desc: str, leave: bool = True) -> None:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._stack = ExitStack()
        self.bar = self._stack.enter_context(tqdm(total=total, initial=initial, desc=desc, unit=self.unit,
                                                  file=self.stream, leave=leave, dynamic_ncols=True))
        self._stack.enter_context(logging_redirect_tqdm())  # the root logger's console handler

    def _close_bar(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self.bar = None, None

    def _section_label(self) -> str:
        return f"epoch {self.section[0]}/{self.sections}" if self.section else ""

    def start_section(self, index: int, units: int) -> None:
        """Section ``index`` (from 1) of ``sections``, of ``units`` units: its own count, ETA and bar."""
        self.section, self.in_section = (index, units), 0
        self._reset_window()
        if self.bar_enabled:
            self._close_bar()
            self._open_bar(units, 0, self._section_label(), leave=False)

    def end_section(self) -> None:
        self.section = None
        if self.bar_enabled:
            self._close_bar()

    def advance(self, n: int = 1, *, items: int | None = None, terms: Any = None, skipped: int = 0) -> None:
        """``n`` units done, holding ``items`` (default ``n``) for the rate, ``skipped`` of them skipped;
        ``terms``: their per-item means, one value per name in ``self.terms``."""
        self.done += n
        self.done_here += n
        self.in_section += n
        self.skipped += skipped
        if not self.enabled:
            return
        items = n if items is None else items
        self.items_here += items
        self.window_units += n
        self.window_items += items
        if terms is not None:
            weighted = terms * items
            self.window = weighted if self.window is None else self.window + weighted
        if self.bar is not None:
            self.bar.update(n)
            if skipped:
                self.bar.set_postfix(skipped=self.skipped, refresh=False)
        count = self.in_section if self.section else self.done_here
        if ((self.every and count % self.every == 0)
                or (self.every_s and time.perf_counter() - self.window_started >= self.every_s)):
            self.log()

    def log(self) -> None:
        """Write the progress line now."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.window_units:
            rate = self.window_items * self.rate_scale / max(now - self.window_started, 1e-9)
        else:
            rate = self.items_here * self.rate_scale / max(now - self.started, 1e-9)
        parts = []
        if self.section:
            units = self.section[1]
            parts.append(f"{self.in_section}/{units} {self.unit}s")
        else:
            parts.append(f"{self.done}/{self.total} {self.unit}s ({self.skipped} skipped this run)")
        means = []
        if self.window is not None and self.window_items:
            means = (self.window / self.window_items).tolist()
            parts.append(" ".join(f"{k} {v:.4g}" for k, v in zip(self.terms, means)))
        parts.append(f"{rate:.{1 if rate >= 10 else 2}f} {self.rate_unit}s/s")
        per_unit = (now - self.started) / self.done_here if self.done_here else None
        left = max(self.total - self.done, 0)
        if per_unit is None:
            eta = "unknown"
        elif self.section:
            eta = f"epoch {duration(max(units - self.in_section, 0) * per_unit)}, run {duration(left * per_unit)}"
        else:
            eta = duration(left * per_unit)
        parts.append(f"ETA {eta}")
        where = f"{self.label} {self._section_label()}" if self.section else self.label
        log.info("%s: %s", where, " | ".join(parts))
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in zip(self.terms[:3], means)}
                                 | {f"{self.rate_unit}s/s": f"{rate:.1f}"})
        self._reset_window()

    def close(self) -> None:
        self._close_bar()
