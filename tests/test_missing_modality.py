"""A clip that lacks a modality (a labelled test clip with no face or no audio track: zero frames, an
all-false frame mask) goes through the model, MCC and metrics without NaN, and contributes nothing
it does not have. Also: tables say how many test clips they scored against the official count."""

import json
from dataclasses import replace

import torch

from kebr.mcc import MCCLoss, modality_cosines
from kebr.model import KEBR, CrossModalAttention, KEBRConfig
from kebr.tables import build_table
from kebr.train.loop import Objective, Runtime
from kebr.train.settings import FinetuneSettings


def test_mcc_cosine_of_an_absent_modality_is_zero_with_finite_gradients():
    torch.manual_seed(0)
    fused = torch.randn(3, 5, 4, requires_grad=True)
    audio, video = torch.randn(3, 7, 3), torch.randn(3, 4, 2)
    audio_mask = torch.ones(3, 7, dtype=torch.bool)
    audio_mask[1] = False  # sample 1: no audio frame at all
    audio = audio * audio_mask[..., None]
    for masks in ({"audio_mask": audio_mask}, {}):  # masked (mask_padding) or plain zeros (reference)
        cos_a, cos_v = modality_cosines(fused, audio, video, **masks)
        assert cos_a[1] == 0 and torch.isfinite(cos_a).all() and (cos_a[[0, 2]] != 0).all()
        for variant, stage in (("paper", "finetune"), ("reference", "pretrain"), ("reference", "finetune")):
            loss = MCCLoss(variant=variant, stage=stage)(fused, audio, video, **masks)
            (grad,) = torch.autograd.grad(loss, fused)
            assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_training_step_on_a_batch_with_absent_modalities_is_finite():
    torch.manual_seed(0)
    model = KEBR(KEBRConfig(d_audio=3, d_video=2, d_embed=16, num_layers=1))
    b, length, t_a, t_v = 3, 8, 6, 4
    audio_mask = torch.arange(t_a).expand(b, t_a) < torch.tensor([[6], [0], [2]])  # sample 1: no audio
    video_mask = torch.arange(t_v).expand(b, t_v) < torch.tensor([[4], [3], [0]])  # sample 2: no face
    batch = {
        "raw_input_ids": torch.randint(1000, 2000, (b, length)),
        "raw_attention_mask": torch.ones(b, length, dtype=torch.bool),
        "audio": torch.randn(b, t_a, 3) * audio_mask[..., None], "audio_mask": audio_mask,
        "video": torch.randn(b, t_v, 2) * video_mask[..., None], "video_mask": video_mask,
        "label": torch.tensor([1.0, -2.0, 0.5]),
    }
    runtime = Runtime(device=torch.device("cpu"), rank=0, world_size=1, amp=False)
    for mask_padding in (True, False):  # the paper's masking, and the reference's attention over padding
        for module in model.modules():
            if isinstance(module, CrossModalAttention):
                module.mask_padding = mask_padding
        model.zero_grad()
        objective = Objective("finetune", replace(FinetuneSettings().mcc, text_positions="real" if mask_padding else "all"))
        terms = objective(model, batch, runtime)
        terms["loss"].backward()
        assert all(torch.isfinite(v) for k, v in terms.items() if k != "n"), (mask_padding, terms)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_tables_state_test_clips_scored_against_the_official_count(tmp_path):
    rows = []
    for name, paper_row, n_test in (("mosi", "MOSI / voxceleb1 / full", 680),
                                    ("mosei", "MOSEI / voxceleb1 / full", 4659)):
        files = []
        for seed in (0, 1):
            path = tmp_path / f"{name}{seed}.json"
            path.write_text(json.dumps({"acc2_has0": 0.8, "acc2_non0": 0.81, "f1_has0": 0.8, "f1_non0": 0.8,
                                        "acc7": 0.4, "acc5": 0.45, "acc3": 0.6, "mae": 0.7, "corr": 0.75,
                                        "n_test": n_test}))
            files.append(path)
        rows.append({"label": name, "paper_row": paper_row, "metrics_files": files, "paper": None})
    build_table("t", rows, tmp_path / "t.md", tmp_path / "t.csv")
    md = (tmp_path / "t.md").read_text()
    assert "| mosi | 2 | 680 of 686 |" in md and "| mosei | 2 | 4659 of 4659 |" in md
    assert "official test set (MOSI 686, MOSEI 4,659)" in md
    csv_text = (tmp_path / "t.csv").read_text().splitlines()
    assert csv_text[0].startswith("run,seeds,test_clips,official_test_clips")
    assert csv_text[1].startswith("mosi,2,680,686")
