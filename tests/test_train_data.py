"""Training batches (kebr/train/data.py): the group sampler's order (every clip once, seeded,
resumable, read in blocks, bucketed by length, shared out under DDP), loader batches independent of
the worker count and equal to per-row reads, and text trimmed to a few fixed lengths without changing
the loss where padding cannot enter it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from kebr.model import KEBR
from kebr.shards import ShardDataset
from kebr.train.data import GroupSampler, make_loader, text_keys, trim_text, trimmed_length
from kebr.train.loop import LOSS_TERMS, Objective
from tiny_training import CONFIG, CPU, FT_CONFIG, MCC, L, first_batch


def loss_terms(model: KEBR, batch: dict, stage: str, positions: str, trim: bool) -> torch.Tensor:
    objective = Objective(stage, replace(MCC, text_positions=positions))
    objective.trim = trim
    with torch.no_grad():
        terms = objective(model.eval(), batch, CPU)
    return torch.stack([terms[k] for k in LOSS_TERMS])


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_trimming_keeps_the_loss_where_padding_cannot_enter(train_shards, stage):
    batch = first_batch(train_shards, stage)
    _, mask_key = text_keys(stage)
    assert int(batch[mask_key].sum(1).max()) < L  # there is padding to cut
    assert Objective(stage, replace(MCC, text_positions="real")).trim
    assert not Objective(stage, replace(MCC, text_positions="all")).trim  # padding enters the MCC
    assert not Objective("finetune", replace(MCC, text_positions="real"), masked_mean=False).trim
    model = KEBR(CONFIG if stage == "pretrain" else FT_CONFIG)
    # The same loss to float32 rounding (bitwise is not promised by float32 kernels: kebr/train/data.py).
    full = loss_terms(model, batch, stage, "real", trim=False)
    torch.testing.assert_close(loss_terms(model, batch, stage, "real", trim=True), full, rtol=1e-5, atol=1e-7)
    # Over all positions (the reference) trimming would change the MCC: that setting keeps the length.
    everything = loss_terms(model, batch, stage, "all", trim=False)
    assert abs(loss_terms(model, batch, stage, "all", trim=True)[2] - everything[2]) > 1e-3


def runs_per_group(group: list[np.ndarray], shards: np.ndarray) -> int:
    """Runs of consecutive items of one shard in a group: the reads it costs per frame array."""
    items = np.sort(np.concatenate(group))
    return 1 + int(np.sum((np.diff(items) != 1) | (np.diff(shards[items]) != 0)))


def test_groups_cover_every_clip_in_a_seeded_resumable_order_read_in_blocks():
    lengths = np.clip(np.random.default_rng(0).gamma(2.0, 6.0, 1000).astype(int) + 3, 3, 39)
    shards = np.repeat(np.arange(10), 100)  # 10 shards of 100 clips

    def sampler(generator: torch.Generator, **kw) -> GroupSampler:
        return GroupSampler(shards, 32, generator, lengths=lengths, **kw)

    first = sampler(torch.Generator().manual_seed(0))
    epochs = [[b for g in first for b in g] for _ in range(2)]
    assert len(epochs[0]) == first.num_batches() == 32  # 31 full batches + 8 clips
    for epoch in epochs:
        assert sorted(i for b in epoch for i in b) == list(range(1000))
    assert [len(b) for b in epochs[0]].count(32) == 31
    assert not all(np.array_equal(a, b) for a, b in zip(*epochs))
    again = sampler(torch.Generator().manual_seed(0))
    assert all(np.array_equal(a, b) for a, b in zip([b for g in again for b in g], epochs[0]))
    # A resumed run restores the generator (as a training state does) and continues the same order.
    generator = torch.Generator().manual_seed(0)
    list(sampler(generator))
    resumed = torch.Generator()
    resumed.set_state(generator.get_state())
    assert all(np.array_equal(a, b) for a, b in zip([b for g in sampler(resumed) for b in g], epochs[1]))
    # Reads: a group of 256 clips is ~4 blocks of <= 64 consecutive rows (shards of 100 clips cut at a
    # random offset make shorter blocks), against ~190 runs when 256 of the 1,000 are drawn at random.
    groups = list(sampler(torch.Generator().manual_seed(2)))
    assert max(runs_per_group(g, shards) for g in groups) <= 8
    scattered = torch.randperm(1000, generator=torch.Generator().manual_seed(1)).numpy()[:256]
    assert runs_per_group([scattered], shards) > 150
    # Padding: the longest text of a bucket batch is near its mean; random batches reach the tail.
    random_batches = torch.randperm(1000, generator=torch.Generator().manual_seed(1)).split(32)
    padded = lambda batches: np.mean([lengths[list(b)].max() - lengths[list(b)].mean() for b in batches])  # noqa: E731
    assert padded(epochs[0]) < 0.3 * padded(random_batches)
    # DDP: every rank takes its own equal share of the same batches.
    ranks = [[b for g in sampler(torch.Generator().manual_seed(0), rank=r, world_size=3) for b in g]
             for r in range(3)]
    assert [len(r) for r in ranks] == [8, 8, 8]  # groups of 8 batches: ranks 0 and 1 also had a tail group
    assert len({i for r in ranks for b in r for i in b}) == sum(len(b) for r in ranks for b in r)
    # Evaluation: every item in order, on every rank.
    ordered = GroupSampler(shards, 32, None, rank=2, world_size=3)
    assert np.array_equal(np.concatenate([b for g in ordered for b in g]), np.arange(1000))


def test_loader_batches_do_not_depend_on_workers_and_match_row_reads(train_shards):
    data = ShardDataset(train_shards, split=None, stage="pretrain")
    batches = {}
    for workers in (0, 2):
        loader = make_loader(data, 5, CPU, shuffle=True, num_workers=workers, bucket_by_length=True,
                             generator=torch.Generator().manual_seed(3))
        batches[workers] = list(loader)
        assert len(batches[workers]) == len(loader) == 5  # 24 clips
    for a, b in zip(batches[0], batches[2]):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The batch holds, row for row, what a per-row read of the train_shards gives.
    order = [i for g in GroupSampler(data.index[:, 0], 5, torch.Generator().manual_seed(3),
                                     lengths=data.text_lengths()) for b in g for i in b]
    rows = [ShardDataset(train_shards)[i] for i in order]
    stacked = {k: torch.cat([b[k] for b in batches[0]]) for k in batches[0][0]}
    assert set(stacked) == {"input_ids", "attention_mask", "mask_index", "mask_label", "audio", "audio_mask",
                            "video", "video_mask"}  # pretraining reads nothing else
    for key, value in stacked.items():
        assert torch.equal(value, torch.stack([r[key] for r in rows])), key
    # Held in RAM: the same batches.
    in_memory = ShardDataset(train_shards, stage="pretrain", in_memory=True)
    assert in_memory.memory and all(torch.equal(in_memory.read(order)[k], stacked[k]) for k in stacked)


def test_trimmed_text_takes_a_few_fixed_lengths():
    assert [trimmed_length(n, 39) for n in (0, 1, 8, 9, 17, 32, 33, 39)] == [8, 8, 8, 16, 24, 32, 39, 39]
    ids, attention = torch.ones(2, 39, dtype=torch.long), torch.zeros(2, 39, dtype=torch.bool)
    attention[0, :11] = True
    assert [t.shape[1] for t in trim_text(ids, attention)[:2]] == [16, 16]
