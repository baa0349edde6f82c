"""Pretraining (kebr/train/pretrain.py) on the tiny shards (tests/tiny_training.py): the task loss
falls, the loss is the MCC-weighted sum of its terms, the save epochs and the newest state are kept,
and the same seed gives the same weights."""

from __future__ import annotations

import pytest

from kebr.train.pretrain import pretrain
from tiny_training import CONFIG, PRETRAIN, assert_same_weights, read_log


def test_pretrain_lowers_task_loss_and_keeps_states(pretrained, train_runs):
    run = train_runs / "pretrain"
    assert pretrained == run / "epoch-0006"
    assert (run / "last").resolve() == pretrained.resolve()
    assert sorted(p.name for p in run.glob("epoch-*")) == ["epoch-0002", "epoch-0006"]  # save epochs + newest
    log = read_log(run)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "l_task", "l_mcc", "cos_a", "cos_v", "lr_backbone", "lr_head", "seconds",
            "samples_per_s"} <= set(log[0])
    assert log[-1]["l_task"] < 0.8 * log[0]["l_task"], [r["l_task"] for r in log]
    for r in log:  # reference pretraining MCC enabled with lambda 0.5: loss = l_task + 0.5 l_mcc
        assert r["loss"] == pytest.approx(r["l_task"] + 0.5 * r["l_mcc"], rel=1e-5)
        assert -1 <= r["cos_a"] <= 1 and -1 <= r["cos_v"] <= 1


def test_pretrain_same_seed_same_weights(train_shards, train_runs, pretrained):
    again = pretrain(train_shards, train_runs / "pretrain_again", model_config=CONFIG, settings=PRETRAIN)
    assert_same_weights(pretrained, again)
