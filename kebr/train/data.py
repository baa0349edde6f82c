"""Training batches: read in contiguous blocks, bucketed by text length, trimmed to a few fixed lengths.

Reading. A batch is read from the shards as one read per dataset per run of nearby rows per shard
(``ShardDataset.read``), never row by row. ``GroupSampler`` makes runs long: per epoch it cuts every
shard's clips into contiguous blocks of ``BLOCK_ROWS`` rows (from a random offset, so blocks differ
between epochs), shuffles the blocks of all shards, and deals the shuffled stream into groups of
about ``GROUP_BLOCKS`` blocks. A group is read at once by one DataLoader worker and cut into its
batches there: a batch mixes the clips of the group's ~4 shards, and a worker opens only those files.
Workers are persistent and batches go to pinned memory on CUDA. ``python bench/loader.py`` measures it
against a per-row read.

Buckets. Inside a group the clips are shuffled, sorted by text length (ties keep the shuffled
order) and cut into batches, whose order within the group is shuffled; without buckets the group is
only shuffled. A group of 256 clips cut into 8 batches of 32 gives each batch an eighth of the length
range, so trimmed batches carry little padding.

Order. Every draw comes from the sampler's generator, whose state every training state saves, so the
batches are the same for a seed, whatever the number of workers, and a resumed run continues the
order exactly. (The DataLoader gets a generator of its own for its worker seeds, so it never draws
from the sampler's stream or the global one.) Under DDP every rank draws the same groups and takes
every world_size-th one; all ranks take the same number of batches (a rank's surplus at the end of
the epoch is dropped). Evaluation reads the items in order, in groups of consecutive batches.

Trimming. Every shard stores its text padded to ``text.max_length`` (39). A batch whose longest text
has n real tokens is cut to n rounded up to a multiple of ``TEXT_LENGTH_STEP`` (``trim_text``), so a
compiled model (``compile: true``) or CUDA graph sees a handful of shapes. Trimming is exact wherever
padding cannot enter the result:
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
bit or two (tests/test_train_data.py: rtol 1e-5). Bitwise equality across batch shapes is not something
float32 kernels promise, so it is not claimed. Where padding does enter the result (MCC over all
positions, the reference; fine-tuning's mean over padding, ``masked_mean: false``) the batch keeps
its full length.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from kebr.shards import ShardDataset

BLOCK_ROWS = 64  # contiguous rows of one shard: one read per frame array
GROUP_BLOCKS = 4  # blocks (so ~4 shards) per group: what one worker reads at once and batches mix
TEXT_LENGTH_STEP = 8  # trimmed text lengths are multiples of this (39 tokens: 8, 16, 24, 32, 39)


def text_keys(stage: str) -> tuple[str, str]:
    """The (ids, attention mask) keys of a shard batch the stage reads: pretraining the masked text,
    fine-tuning the unmasked one."""
    prefix = "" if stage == "pretrain" else "raw_"
    return f"{prefix}input_ids", f"{prefix}attention_mask"


def trimmed_length(longest: int, full: int) -> int:
    """The text length a batch whose longest text has ``longest`` real tokens is cut to."""
    return min(full, -(-max(longest, 1) // TEXT_LENGTH_STEP) * TEXT_LENGTH_STEP)


def trim_text(ids: torch.Tensor, attention: torch.Tensor, hidden: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Cut (B, L) ids and mask (and (B, L, d) cached LM states) to the batch's ``trimmed_length``."""
    n = trimmed_length(int(attention.sum(dim=1).max()), ids.shape[1])
    return ids[:, :n], attention[:, :n], None if hidden is None else hidden[:, :n]


class GroupSampler(Sampler[list[np.ndarray]]):
    """Groups of batches of item indices (module docstring), for ``GroupReader``.

    ``shards``: the shard of every item, items of a shard consecutive (``ShardDataset.index[:, 0]``).
    ``lengths``: text lengths for buckets, or None. ``generator``: None reads in order (evaluation).
    """

    def __init__(self, shards: np.ndarray, batch_size: int, generator: torch.Generator | None, *,
                 lengths: np.ndarray | None = None, rank: int = 0, world_size: int = 1,
                 block_rows: int = BLOCK_ROWS, group_blocks: int = GROUP_BLOCKS) -> None:
        self.shards = np.asarray(shards)
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.batch_size, self.generator = batch_size, generator
        # Evaluation (no generator) reads every item on every rank.
        self.rank, self.world_size = (rank, world_size) if generator is not None else (0, 1)
        self.block_rows = block_rows
        self.group_rows = batch_size * max(1, round(group_blocks * block_rows / batch_size))

    def _randperm(self, n: int) -> np.ndarray:
        return torch.randperm(n, generator=self.generator).numpy()

    def _stream(self) -> np.ndarray:
        """Every item once: blocks of consecutive items of one shard, in shuffled order."""
        n = len(self.shards)
        if self.generator is None:
            return np.arange(n)
        firsts = np.flatnonzero(np.r_[True, self.shards[1:] != self.shards[:-1]]) if n else np.zeros(0, int)
        offsets = torch.randint(self.block_rows, (len(firsts),), generator=self.generator).numpy()
        cuts = [np.arange(first + offset, stop, self.block_rows)
                for first, stop, offset in zip(firsts, np.r_[firsts[1:], n], offsets)]
        starts = np.unique(np.concatenate([firsts, *cuts])) if n else np.zeros(0, int)
        blocks = np.split(np.arange(n), starts[1:])
        return np.concatenate([blocks[i] for i in self._randperm(len(blocks))]) if n else np.arange(0)

    def _batches(self, group: np.ndarray) -> list[np.ndarray]:
        if self.generator is not None:
            group = group[self._randperm(len(group))]
            if self.lengths is not None:
                group = group[np.argsort(self.lengths[group], kind="stable")]
        batches = [group[i:i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        return batches if self.generator is None else [batches[i] for i in self._randperm(len(batches))]

    def _group_sizes(self, rank: int) -> list[int]:
        """Batches per group of ``rank``, in order (they do not depend on the draws)."""
        n = len(self.shards)
        sizes = [-(-min(self.group_rows, n - start) // self.batch_size) for start in range(0, n, self.group_rows)]
        return sizes[rank::self.world_size]

    def num_batches(self) -> int:
        """Batches this rank takes per epoch: under DDP, as many as the rank with the fewest."""
        return min(sum(self._group_sizes(rank)) for rank in range(self.world_size))

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        stream = self._stream()
        groups = [self._batches(stream[i:i + self.group_rows]) for i in range(0, len(stream), self.group_rows)]
        left = self.num_batches()
        for group in groups[self.rank::self.world_size]:
            if left <= 0:
                break
            yield group[:left]
            left -= len(group)

    def __len__(self) -> int:
        return len(self._group_sizes(self.rank))


class GroupReader(Dataset):
    """``reader[group]``: the group's rows read in one go, (batch of all its rows, row bounds of its
    batches); ``Batches`` cuts it. One tensor per field crosses from a worker (and is pinned), not
    one per field per batch: each costs a shared-memory handle and a pinning call."""

    def __init__(self, dataset: ShardDataset) -> None:
        self.dataset = dataset

    def __getitem__(self, group: list[np.ndarray]) -> tuple[dict[str, torch.Tensor], list[int]]:
        return self.dataset.read(np.concatenate(group)), np.cumsum([0, *map(len, group)]).tolist()

    def __len__(self) -> int:
        return len(self.dataset)


def _keep(group: Any) -> Any:
    return group  # already tensors


class Batches:
    """The batches of a ``GroupSampler`` epoch, read by a DataLoader's workers a group at a time."""

    def __init__(self, dataset: ShardDataset, sampler: GroupSampler, loader: DataLoader) -> None:
        self.dataset, self.sampler, self.loader = dataset, sampler, loader

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for rows, bounds in self.loader:
            for a, b in zip(bounds[:-1], bounds[1:]):
                yield {key: value[a:b] for key, value in rows.items()}

    def __len__(self) -> int:
        return self.sampler.num_batches()


def make_loader(dataset: ShardDataset, batch_size: int, runtime: Any, *, shuffle: bool, num_workers: int,
                generator: torch.Generator | None = None, bucket_by_length: bool = False) -> Batches:
    """Batches of a ShardDataset. Training (``shuffle``: drawn from ``generator``) is split across DDP
    ranks and, with ``bucket_by_length``, bucketed by text length; evaluation reads in order."""
    if shuffle and generator is None:
        raise ValueError("training batches are drawn from a generator")
    if bucket_by_length and not shuffle:
        raise ValueError("length buckets are for training batches")
    sampler = GroupSampler(dataset.index[:, 0], batch_size, generator if shuffle else None,
                           lengths=dataset.text_lengths() if bucket_by_length else None,
                           rank=runtime.rank, world_size=runtime.world_size)
    # Rows held in RAM are sliced faster than a worker could pass them over.
    workers = 0 if dataset.memory or not len(dataset) else num_workers
    loader = DataLoader(GroupReader(dataset), batch_size=None, sampler=sampler, collate_fn=_keep,
                        num_workers=workers, persistent_workers=workers > 0,
                        prefetch_factor=2 if workers else None, pin_memory=runtime.device.type == "cuda",
                        generator=torch.Generator().manual_seed(0))
    return Batches(dataset, sampler, loader)
