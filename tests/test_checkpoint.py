"""Resume from the training states on disk (kebr/train/checkpoint.py, ``fit`` in kebr/train/loop.py):
a run stopped after some epochs, with a save a kill interrupted, resumes to the weights and losses of
an uninterrupted run; a state is not resumed with other settings. (Killed through the CLI at random
steps: tests/test_kill_train.py.)"""

from __future__ import annotations

from dataclasses import replace

import pytest

from kebr.train.checkpoint import WEIGHTS
from kebr.train.pretrain import pretrain
from tiny_training import CONFIG, PRETRAIN, assert_same_weights, read_log


def test_pretrain_resume_equals_uninterrupted_run(train_shards, train_runs, pretrained):
    run = train_runs / "pretrain_resumed"
    pretrain(train_shards, run, model_config=CONFIG, settings=replace(PRETRAIN, epochs=3))  # "killed" after epoch 3
    broken = run / ".tmp-epoch-0004-12345"  # a save the kill interrupted
    broken.mkdir()
    (broken / WEIGHTS).write_bytes(b"half a file")
    final = pretrain(train_shards, run, model_config=CONFIG, settings=PRETRAIN)
    assert_same_weights(pretrained, final)
    assert not broken.exists()
    assert [r["l_task"] for r in read_log(run)] == [r["l_task"] for r in read_log(train_runs / "pretrain")]


def test_resume_refuses_other_settings(train_shards, train_runs, pretrained):
    with pytest.raises(ValueError, match="lr"):
        pretrain(train_shards, train_runs / "pretrain", model_config=CONFIG, settings=replace(PRETRAIN, lr=1e-3, epochs=7))
