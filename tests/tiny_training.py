"""The tiny training setup the training tests share: two shards of 12 clips with real masked
sentences (bundled MiniLM tokenizer + VADER) and seeded audio/visual features, one feature carrying
the label; the model and the settings of the short runs; helpers that read the runs. The shards and
the runs trained on them are session fixtures in conftest.py (``train_shards``, ``pretrained``,
``finetuned``), so each is built once however many test files use it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from kebr.masking import SentimentMasker, load_tokenizer
from kebr.model import KEBRConfig
from kebr.shards import ShardDataset, ShardRow, write_shard
from kebr.train.checkpoint import WEIGHTS
from kebr.train.loop import Runtime
from kebr.train.settings import FinetuneSettings, PretrainSettings

SENTENCES = [  # (transcript, sentiment label in [-3, 3])
    ("I absolutely loved this movie, it was wonderful", 2.8),
    ("the plot was boring and the acting was terrible", -2.6),
    ("it was okay, nothing special really", 0.2),
    ("what a horrible waste of two hours", -3.0),
    ("the soundtrack is great and the cast is charming", 2.2),
    ("I guess it was fine for a sunday afternoon", 0.6),
    ("the ending made me so sad and angry", -1.8),
    ("a brilliant, funny and clever film", 2.6),
    ("we walked to the station after the show", 0.0),
    ("honestly the worst sequel I have ever seen", -2.8),
    ("the dialogue felt awkward but the visuals were nice", 0.4),
    ("I hate how they ruined the main character", -2.2),
    ("such a happy surprise, I enjoyed every minute", 2.4),
    ("the pacing is slow and a bit dull", -1.2),
    ("my kids thought it was hilarious", 2.0),
    ("the story was confusing and the jokes failed", -1.6),
    ("it has some good moments", 1.0),
    ("the director did an amazing job", 2.4),
    ("I was disappointed by the weak script", -1.8),
    ("the film runs about ninety minutes", 0.0),
    ("beautiful photography and a lovely score", 2.2),
    ("the villain was stupid and annoying", -2.0),
    ("not bad, I would watch it again", 1.2),
    ("a painful, ugly mess from start to finish", -2.8),
]
SPLITS = ["train"] * 4 + ["valid", "test"]  # per block of six clips: 16 train, 4 valid, 4 test
D_A, T_A, D_V, T_V, L = 33, 20, 16, 8, 24
CONFIG = KEBRConfig(d_audio=D_A, d_video=D_V, num_layers=1, d_embed=32, head_hidden=32, dropout=0.1,
                    freeze_text=True)
FT_CONFIG = KEBRConfig(**{**CONFIG.to_dict(), "freeze_text": False})  # fine-tuning trains the LM
# No loader workers: the shards are tiny and held in memory.
PRETRAIN = PretrainSettings(epochs=6, batch_size=8, lr=2e-3, save_epochs=(2,), device="cpu", num_workers=0)
FINETUNE = FinetuneSettings(epochs=8, batch_size=8, lr_backbone=2e-4, lr_head=2e-3, t_max=8, device="cpu",
                            num_workers=0)
FINETUNE_SEED = 1
CPU = Runtime(torch.device("cpu"), rank=0, world_size=1, amp=False)
MCC = PRETRAIN.mcc  # the reference's pretraining form, g 0.25, lambda 0.5


def write_train_shards(root: Path) -> list[Path]:
    """Two shards of 12 clips in ``root``. Audio column 0 is the clip label plus noise, column 1 the
    masked word's label; everything else is noise; lengths vary so padding is exercised."""
    tokenizer = load_tokenizer("bundled")
    masker = SentimentMasker(tokenizer, max_length=L, seed=0)
    rng = np.random.default_rng(0)
    rows = []
    for i, (text, label) in enumerate(SENTENCES):
        clip_id = f"spk{i % 4}__clip{i:02d}"
        masked = masker(text, clip_id)
        audio = rng.normal(0, 0.3, (int(rng.integers(12, T_A + 1)), D_A)).astype(np.float32)
        audio[:, 0] += label
        audio[:, 1] += masked.label
        video = rng.normal(0, 0.3, (int(rng.integers(4, T_V + 1)), D_V)).astype(np.float32)
        transcript = {"source": "gold", "avg_logprob": 0.0, "no_speech_prob": 0.0, "language_prob": 1.0,
                      "language": "en", "words": []}
        rows.append(ShardRow(clip_id, SPLITS[i % 6], f"spk{i % 4}", label, transcript, masked, audio, video))
    attrs = {"dataset": "tiny", "text_model": "bundled"}
    return [write_shard(root / f"{k:05d}.h5", rows[12 * k: 12 * (k + 1)],
                        audio_columns=[f"a{j}" for j in range(D_A)], visual_columns=[f"v{j}" for j in range(D_V)],
                        audio_frames=T_A, visual_frames=T_V, text_length=L, tokenizer=tokenizer,
                        attrs={**attrs, "shard": f"{k:05d}"}) for k in range(2)]


def read_log(run: Path) -> list[dict[str, float]]:
    with (run / "log.csv").open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / WEIGHTS)), load_file(str(b / WEIGHTS))
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, different[:5]


def first_batch(shards: list[Path], stage: str, split: str | None = None, size: int = 8) -> dict:
    data = ShardDataset(shards, split=split, labelled=stage == "finetune")
    return next(iter(DataLoader(data, batch_size=size)))
