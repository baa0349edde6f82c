"""The pretraining LM cache (kebr/train/lm_cache.py): cached runs match the uncached one to their
storage precision (and log their progress lines), LM dropout rules the cache out, and a sidecar is
keyed by the shard's text and the LM's weights."""

from __future__ import annotations

import logging
import re
import shutil
import socket
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from kebr.model import TextEncoder
from kebr.train.lm_cache import build_sidecars
from kebr.train.pretrain import pretrain
from tiny_training import CONFIG, CPU, PRETRAIN, L, read_log


def test_lm_cache_runs_match_the_uncached_run(train_shards, tmp_path, caplog):
    """float32 storage: the losses of the uncached run to float32 rounding; float16: to ~1e-3
    (kebr/train/lm_cache.py); LM dropout (the reference) changes the run. Also the progress lines."""
    copies = [Path(shutil.copy(s, tmp_path / s.name)) for s in train_shards]
    short = replace(PRETRAIN, epochs=2, save_epochs=())
    caplog.set_level(logging.INFO, logger="kebr")
    runs = {cache: pretrain(copies, tmp_path / cache, model_config=CONFIG,
                            settings=replace(short, lm_cache=cache, log_every_steps=1))
            for cache in ("none", "float32", "float16")}
    logs = {cache: read_log(tmp_path / cache) for cache in runs}
    gap = {cache: max(abs(row[k] / ref[k] - 1) for row, ref in zip(logs[cache], logs["none"])
                      for k in ("loss", "l_task", "l_mcc")) for cache in ("float32", "float16")}
    assert gap["float32"] < 1e-6 and gap["float32"] < gap["float16"] < 1e-3, gap  # measured: 5e-8 and 6e-5
    sidecars = sorted(p.name for p in (tmp_path / "lm_cache").iterdir())
    assert len(sidecars) == 4 and sidecars[0].startswith("00000-")  # 2 train_shards x 2 dtypes
    # Progress: one line per step (log_every_steps=1); their losses average to the epoch's (3 full batches).
    lines = [r.getMessage() for r in caplog.records if str(tmp_path / "float32") in r.getMessage() and " steps | " in r.getMessage()]
    assert len(lines) == 6 and all(re.search(r"samples/s \| ETA epoch \d+:\d\d:\d\d, run \d+:\d\d:\d\d", x) for x in lines)
    steps = [float(re.search(r"steps \| loss (\S+)", x).group(1)) for x in lines]
    for epoch, row in enumerate(logs["float32"]):
        assert np.mean(steps[3 * epoch: 3 * epoch + 3]) == pytest.approx(row["loss"], rel=1e-3)
    # The reference's frozen LM in train mode: dropout on, so the run differs (no cache possible).
    with pytest.raises(ValueError, match="lm_cache"):
        replace(short, frozen_lm_dropout=True)
    pretrain(copies, tmp_path / "dropout", model_config=CONFIG,
             settings=replace(short, lm_cache="none", frozen_lm_dropout=True, log_every_steps=0))
    assert read_log(tmp_path / "dropout")[0]["l_task"] != logs["none"][0]["l_task"]


def test_lm_cache_sidecar_is_keyed_by_text_and_weights(train_shards, tmp_path):
    shard = Path(shutil.copy(train_shards[0], tmp_path / train_shards[0].name))
    lm = TextEncoder("bundled", freeze=True)
    [first] = build_sidecars([shard], lm, dtype="float16", runtime=CPU)
    with h5py.File(first) as f, h5py.File(shard) as s, torch.no_grad():
        stored = f["hidden"][()]
        states = lm(torch.from_numpy(s["text/input_ids"][()]).long(), torch.from_numpy(s["text/attention_mask"][()]))
    assert stored.dtype == np.float16 and stored.shape == tuple(states.shape) == (12, L, 384)
    np.testing.assert_allclose(stored, states.numpy(), rtol=2**-10, atol=1e-6)  # fp16 rounding only
    built = first.stat().st_mtime_ns
    assert build_sidecars([shard], lm, dtype="float16", runtime=CPU) == [first]
    assert first.stat().st_mtime_ns == built  # reused, not recomputed
    # Other weights: another sidecar; the first stays (a run with the old LM may be reading it). The
    # temporary file of a build killed on this host goes.
    killed = first.parent / f".{first.name}.{socket.gethostname()}.999999999.tmp"
    killed.write_bytes(b"half a sidecar")
    with torch.no_grad():
        lm.model.encoder.layer[-1].output.LayerNorm.bias += 0.01
    [other] = build_sidecars([shard], lm, dtype="float16", runtime=CPU)
    assert other != first and first.exists() and not killed.exists()
    # A rebuilt shard with other text: new states; this LM's old sidecar of the shard is deleted.
    with h5py.File(shard, "r+") as f:
        f["text/input_ids"][0, 1] = 2204
    [rebuilt] = build_sidecars([shard], lm, dtype="float16", runtime=CPU)
    assert rebuilt not in (first, other) and not other.exists() and first.exists()
