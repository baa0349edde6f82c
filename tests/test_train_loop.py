"""The objective and prediction of the training loop (kebr/train/loop.py), by value: the MCC text
positions (``mcc.text_positions``) choose what the cosines flatten, and ``predict``'s autocast switch
(``eval_amp``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import DataLoader

from kebr.mcc import reference_modality_cosines
from kebr.model import KEBR
from kebr.shards import ShardDataset
from kebr.train.loop import Objective, Runtime, batch_inputs, predict
from tiny_training import CPU, FT_CONFIG, MCC, first_batch


def test_mcc_text_positions_choose_what_the_cosines_flatten(train_shards):
    batch = first_batch(train_shards, "finetune")
    model = KEBR(FT_CONFIG).eval()
    with torch.no_grad():
        untrimmed, _ = batch_inputs(batch, "finetune", CPU.device)
        fused = model(**untrimmed)["fused"]  # (B, L, d_t) over every position
        real = torch.as_tensor(untrimmed["attention_mask"])[..., None]
        audio, video = batch["audio"], batch["video"]
        want = {"all": reference_modality_cosines(fused, audio, video),  # the reference's own loop
                "real": reference_modality_cosines(fused * real, audio * batch["audio_mask"][..., None],
                                                   video * batch["video_mask"][..., None])}
        for positions in ("real", "all"):
            objective = Objective("finetune", replace(MCC, text_positions=positions))
            inputs, _, length = objective.inputs(batch, CPU.device)
            got = objective.cosines(model(**inputs)["fused"], inputs, length)
            for g, w in zip(got, want[positions]):
                torch.testing.assert_close(g, w, rtol=0, atol=2e-6)
    assert (want["real"][0] - want["all"][0]).abs().max() > 1e-3


def test_evaluation_autocast_switch(train_shards):
    model = KEBR(FT_CONFIG).eval()
    loader = DataLoader(ShardDataset(train_shards, split="valid", labelled=True), batch_size=4)
    objective = Objective("finetune", MCC)
    bf16 = Runtime(torch.device("cpu"), rank=0, world_size=1, amp=True)  # bf16 autocast (CPU, for the test)
    fp32 = predict(model, loader, objective, bf16, amp=False)["prediction"]
    mixed = predict(model, loader, objective, bf16, amp=True)["prediction"]
    with torch.no_grad():
        plain = model(**objective.inputs(next(iter(loader)), CPU.device)[0])["prediction"].numpy()
    np.testing.assert_array_equal(fp32, plain)
    assert np.abs(mixed - fp32).max() > 1e-4


def test_the_mcc_trains_the_fusion_alone_by_default_and_costs_no_second_pass_when_off():
    """mcc.trains_lm false (the default) asks the model for the MCC's own TCMF pass over stopped LM
    states; with MCC off its cosines are only logged, so the objective asks for none."""
    finetune_mcc = replace(MCC, trains_lm=False)
    assert Objective("finetune", finetune_mcc).model_options == {"mcc_sequence": "tcmf", "mcc_trains_lm": False}
    off = Objective("finetune", replace(finetune_mcc, enabled=False))
    assert off.model_options == {"mcc_sequence": "tcmf", "mcc_trains_lm": True}
    assert Objective("finetune", replace(MCC, trains_lm=True)).model_options["mcc_trains_lm"] is True
