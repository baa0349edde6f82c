"""Training progress (kebr/train/progress.py): the tqdm bar is drawn on a terminal only. (The log
lines: tests/test_lm_cache.py.)"""

from __future__ import annotations

import io

import torch

from kebr.train.progress import Progress


def test_progress_bar_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        progress = Progress("run", terms=("loss",), epochs=2, steps_per_epoch=3, every=1, stream=stream)
        progress.start_epoch(1)
        for _ in range(3):
            progress.step(torch.tensor([0.5]), 8)
        progress.end_epoch()
        bar = stream.getvalue()
        assert ("epoch 1/2" in bar and "3/3" in bar and "loss=0.5" in bar) == shown, bar
