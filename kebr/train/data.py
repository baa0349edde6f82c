"""Training batches that spend compute on real tokens: length buckets and trimming to the longest text.

Trimming. Every shard stores its text padded to ``text.max_length`` (39). A batch whose longest text
has n real tokens is cut to n positions (``trim_text``) wherever padding cannot enter the result:
- the LM masks padded keys (their attention weights are exactly 0) and works per token otherwise;
- TCMF queries with the text, so each token's output depends on that token and the audio/video only;
- pretraining reads the fused vector at the mask token, fine-tuning pools over real tokens
  (``model.masked_mean``);
- the MCC over real tokens (``mcc.text_positions: real``) zeroes padded positions, and the
  objective pads the fused sequence back to the full length with zeros before flattening it, so the
  repeat-and-pad layout of the cosines is that of the untrimmed batch.
So a trimmed batch gives the same loss in exact arithmetic, and in float32 the same to rounding: CPU
matrix-product kernels (MKL, and PyTorch's SDPA attention, which blocks over the key length) may
add a row's terms in another order when the number of rows or keys differs, which moves the last
bit or two (tests/test_train.py: rtol 1e-5). Bitwise equality across batch shapes is not something
float32 kernels promise, so it is not claimed. Where padding does enter the result (MCC over all
positions, the reference; fine-tuning's mean over padding, ``masked_mean: false``) the batch keeps
its full length.

Buckets. Random batches of 32 MOSI texts (15 tokens on average) still reach ~36 of 39 tokens, so
trimming alone saves little. ``LengthBucketSampler`` makes batches of similar length: per epoch it
shuffles all clips, cuts them into pools of ``POOL_BATCHES`` batches, sorts each pool by length
(ties keep the shuffled order), cuts the pool into batches and shuffles the order of all batches.
Every draw comes from the loader's generator, whose state every training state saves, so the order
is the same for a seed and a resumed run continues it exactly. Under DDP every rank draws the same
batches and takes every world_size-th one (the tail that does not divide evenly is dropped, so all
ranks take the same number of steps).
"""

from __future__ import annotations

import random
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

# A pool of this many batches is sorted by length: large enough that batches are of nearly equal
# length (MOSI's 1,284 training clips are 40 batches: one pool), small enough that a big corpus is
# still mixed across the whole epoch.
POOL_BATCHES = 100


def text_keys(stage: str) -> tuple[str, str]:
    """The (ids, attention mask) keys of a shard batch the stage reads: pretraining the masked text,
    fine-tuning the unmasked one."""
    prefix = "" if stage == "pretrain" else "raw_"
    return f"{prefix}input_ids", f"{prefix}attention_mask"


def text_lengths(dataset: Any, stage: str) -> np.ndarray:
    """Real tokens of every clip of a ShardDataset (in its order) in the text the stage reads."""
    _, mask_key = text_keys(stage)
    per_shard = []
    for path in dataset.paths:
        with h5py.File(path, "r") as f:
            per_shard.append(f[f"text/{mask_key}"][()].sum(axis=1) if len(f["id"]) else np.zeros(0, int))
    return np.array([per_shard[shard][row] for shard, row in dataset.index], dtype=np.int64)


def trim_text(ids: torch.Tensor, attention: torch.Tensor, hidden: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Cut (B, L) ids and mask (and (B, L, d) cached LM states) to the longest real text of the batch."""
    n = max(int(attention.sum(dim=1).max()), 1)
    return ids[:, :n], attention[:, :n], None if hidden is None else hidden[:, :n]


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of clips of similar text length (module docstring); a batch sampler for DataLoader."""

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator, *,
                 rank: int = 0, world_size: int = 1, pool_batches: int = POOL_BATCHES) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.generator = generator
        self.rank, self.world_size = rank, world_size
        self.pool = pool_batches * batch_size

    def _all_batches(self) -> list[np.ndarray]:
        order = torch.randperm(len(self.lengths), generator=self.generator).numpy()
        batches = []
        for start in range(0, len(order), self.pool):
            pool = order[start:start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        shuffled = torch.randperm(len(batches), generator=self.generator).tolist()
        return [batches[i] for i in shuffled]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        per_rank = len(batches) // self.world_size if self.world_size > 1 else len(batches)
        for batch in batches[self.rank::self.world_size][:per_rank]:
            yield batch.tolist()

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.pool)
        batches = full * (self.pool // self.batch_size) + -(-rest // self.batch_size)
        return batches // self.world_size if self.world_size > 1 else batches


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy and python follow it.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: Dataset, batch_size: int, runtime: Any, *, shuffle: bool, seed: int,
                num_workers: int, generator: torch.Generator | None = None,
                bucket_lengths: Sequence[int] | None = None) -> DataLoader:
    """A streaming loader over a ShardDataset. Training (``shuffle``) is split across DDP ranks;
    ``bucket_lengths`` (per clip text lengths) switches to length buckets (training only)."""
    common = dict(num_workers=num_workers, worker_init_fn=_seed_worker, generator=generator,
                  pin_memory=runtime.device.type == "cuda")
    if bucket_lengths is not None:
        if not shuffle or generator is None:
            raise ValueError("length buckets are for training batches drawn from a generator")
        sampler = LengthBucketSampler(bucket_lengths, batch_size, generator, rank=runtime.rank,
                                      world_size=runtime.world_size)
        return DataLoader(dataset, batch_sampler=sampler, **common)
    distributed = shuffle and runtime.distributed
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed) if distributed else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      **common)
