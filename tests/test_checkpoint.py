"""Resume from the training states on disk (kebr/train/checkpoint.py, ``fit`` in kebr/train/loop.py):
a run stopped after some epochs, with a save a kill interrupted, resumes to the weights and losses of
an uninterrupted run; a state is not resumed with other settings; states written by the clock
(``checkpoint_minutes``) change no result, and a resume past a best state a kill left behind ends where
an uninterrupted run does. (Killed through the CLI at random steps: tests/test_kill_train.py.)"""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from kebr.train.checkpoint import STATE, WEIGHTS, save_state, saved_epochs, state_name
from kebr.train.finetune import finetune
from kebr.train.pretrain import pretrain
from tiny_training import CONFIG, FINETUNE, FINETUNE_SEED, FT_CONFIG, PRETRAIN, assert_same_weights, read_log


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


def test_states_written_by_the_clock_give_the_same_finetuning(train_shards, train_runs, pretrained, finetuned,
                                                              monkeypatch):
    """checkpoint_minutes 10 (the default, which ``finetuned`` ran with) writes one state for these short
    runs, the last, with the best epoch's weights held in memory until then; every epoch's state
    (checkpoint_minutes 0) changes no number: same test metrics, same best weights."""
    import kebr.train.loop as loop

    writes = []
    monkeypatch.setattr(loop, "save_state", lambda run_dir, epoch, **kw: writes.append(epoch) or save_state(
        run_dir, epoch, **kw))
    run = train_runs / "finetune_every_epoch"
    every_epoch = finetune(train_shards, run, model_config=FT_CONFIG, pretrained=pretrained, seed=FINETUNE_SEED,
                           settings=replace(FINETUNE, checkpoint_minutes=0))
    assert writes == list(range(1, FINETUNE.epochs + 1))
    assert every_epoch == finetuned
    best = state_name(finetuned["best_epoch"])
    assert finetuned["best_epoch"] < FINETUNE.epochs, "the test needs a best epoch that is not the last"
    assert_same_weights(run / best, train_runs / "finetune" / best)
    assert saved_epochs(train_runs / "finetune") == [FINETUNE.epochs]  # the best epoch: weights only
    assert not (train_runs / "finetune" / best / STATE).exists()


def test_finetuning_resumes_past_a_best_state_that_a_kill_left_behind(train_shards, train_runs, pretrained,
                                                                      finetuned):
    """Killed after the full state of epoch 3 and the best weights of a later epoch were written (a
    weights-only state past the state it resumes from): the resumed run trains on from epoch 3 and
    ends where an uninterrupted one does."""
    run = train_runs / "finetune_killed"
    finetune(train_shards, run, model_config=FT_CONFIG, pretrained=pretrained, seed=FINETUNE_SEED,
             settings=replace(FINETUNE, epochs=3, checkpoint_minutes=0))
    stale = run / state_name(5)
    shutil.copytree(run / state_name(3), stale)
    (stale / STATE).unlink()
    resumed = finetune(train_shards, run, model_config=FT_CONFIG, pretrained=pretrained, seed=FINETUNE_SEED,
                       settings=FINETUNE)
    assert resumed == finetuned
    assert [r["valid_mae"] for r in read_log(run)] == [r["valid_mae"] for r in read_log(train_runs / "finetune")]
    best = state_name(finetuned["best_epoch"])
    assert_same_weights(run / best, train_runs / "finetune" / best)
