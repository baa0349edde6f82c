"""KEBR model: TCMF masking, weight sharing, switches, pooling, heads, gradients (real bundled MiniLM)."""

from __future__ import annotations

import math

import pytest
import torch

from kebr.masking import load_tokenizer
from kebr.model import (
    KEBR,
    TCMF,
    CrossModalAttention,
    KEBRConfig,
    TCMFLayer,
    gather_at,
    masked_mean,
)

D_T, D_A, D_V, D_E = 384, 33, 20, 256  # MiniLM hidden size; reference audio width; a small visual width
T_A, T_V = 9, 6
SENTENCES = ["i really [MASK] this movie", "the plot was slow and the acting was [MASK] at best"]


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    """Two real tokenised sentences of different lengths, non-verbal inputs with padding."""
    tokenizer = load_tokenizer("bundled")
    enc = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    gen = torch.Generator().manual_seed(0)
    audio_mask = torch.ones(2, T_A, dtype=torch.bool)
    audio_mask[0, 5:] = False  # sample 0: 5 real audio frames
    video_mask = torch.ones(2, T_V, dtype=torch.bool)
    video_mask[1, 2:] = False  # sample 1: 2 real video frames
    audio = torch.randn(2, T_A, D_A, generator=gen) * audio_mask[..., None]  # padding is zeros
    video = torch.randn(2, T_V, D_V, generator=gen) * video_mask[..., None]
    mask_index = (enc["input_ids"] == tokenizer.mask_token_id).int().argmax(dim=1)
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "audio": audio,
        "audio_mask": audio_mask,
        "video": video,
        "video_mask": video_mask,
        "mask_index": mask_index,
    }


@pytest.fixture(scope="module")
def frozen_model() -> KEBR:
    torch.manual_seed(0)
    return KEBR(KEBRConfig(d_audio=D_A, d_video=D_V, freeze_text=True))


@pytest.fixture(scope="module")
def text_hidden(frozen_model: KEBR, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return frozen_model.text(batch["input_ids"], batch["attention_mask"])


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tcmf_out(tcmf: TCMF, text: torch.Tensor, batch: dict, **overrides: torch.Tensor) -> torch.Tensor:
    inputs = {k: batch[k] for k in ("audio", "video", "audio_mask", "video_mask")} | overrides
    tcmf.eval()
    with torch.no_grad():
        return tcmf(text, **inputs)


# ---- weight sharing -------------------------------------------------------------------------------

# One layer: two CMAs (LN text 2*384, LN modality 2*d_m, W_Q 384*256+256, W_K and W_V d_m*256+256 each,
# W_O 256*384+384) + residual LN 2*384 + FFN LN 2*384 + FFN 384*384+384.
CMA_A = 768 + 66 + (98304 + 256) + 2 * (33 * 256 + 256) + (98304 + 384)  # 215,490
CMA_V = 768 + 40 + (98304 + 256) + 2 * (20 * 256 + 256) + (98304 + 384)  # 208,808
LAYER = CMA_A + CMA_V + 768 + 768 + (384 * 384 + 384)


def test_param_counts_shared_and_unshared() -> None:
    assert LAYER == 573_674
    layer = TCMFLayer(D_T, D_A, D_V, D_E)
    assert n_params(layer) == LAYER
    assert n_params(TCMF(D_T, D_A, D_V, D_E, num_layers=4, share_weights=True)) == LAYER
    assert n_params(TCMF(D_T, D_A, D_V, D_E, num_layers=4, share_weights=False)) == 4 * LAYER
    # The reference's identity residual has no LayerNorm of its own.
    assert n_params(TCMF(D_T, D_A, D_V, D_E, residual="identity")) == LAYER - 768


def test_shared_tcmf_applies_one_layer_k_times(text_hidden: torch.Tensor, batch: dict) -> None:
    tcmf = TCMF(D_T, D_A, D_V, D_E, num_layers=3, share_weights=True)
    out = tcmf_out(tcmf, text_hidden, batch)
    x = text_hidden
    with torch.no_grad():
        for _ in range(3):
            x = tcmf.layers[0](x, batch["audio"], batch["video"], batch["audio_mask"], batch["video_mask"])
    torch.testing.assert_close(out, x)
    assert not torch.allclose(out, tcmf.layers[0](text_hidden, batch["audio"], batch["video"], None, None))


# ---- cross-modal attention ------------------------------------------------------------------------


def test_cma_matches_hand_computation_over_valid_frames(text_hidden: torch.Tensor, batch: dict) -> None:
    cma = CrossModalAttention(D_T, D_A, D_E).eval()
    with torch.no_grad():
        out = cma(text_hidden, batch["audio"], batch["audio_mask"])
        for i in range(2):
            frames = batch["audio"][i, batch["audio_mask"][i]]  # only the valid frames
            q = cma.w_q(cma.norm_text(text_hidden[i]))
            m = cma.norm_modality(frames)
            weights = torch.softmax(q @ cma.w_k(m).T / math.sqrt(D_E), dim=-1)
            torch.testing.assert_close(out[i], cma.w_o(weights @ cma.w_v(m)))


def test_padded_frames_are_masked_only_when_asked(text_hidden: torch.Tensor, batch: dict) -> None:
    # Random, not constant: LayerNorm maps any constant frame to the same vector as a zero frame.
    gen = torch.Generator().manual_seed(5)
    noisy_audio = batch["audio"].clone()
    noisy_audio[~batch["audio_mask"]] = torch.randn(int((~batch["audio_mask"]).sum()), D_A, generator=gen)
    noisy_video = batch["video"].clone()
    noisy_video[~batch["video_mask"]] = torch.randn(int((~batch["video_mask"]).sum()), D_V, generator=gen)
    for mask_padding in (True, False):
        torch.manual_seed(1)
        tcmf = TCMF(D_T, D_A, D_V, D_E, mask_padding=mask_padding)
        clean = tcmf_out(tcmf, text_hidden, batch)
        noisy = tcmf_out(tcmf, text_hidden, batch, audio=noisy_audio, video=noisy_video)
        if mask_padding:
            torch.testing.assert_close(clean, noisy)
        else:
            # Sample 0 has padded audio, sample 1 padded video: both change without the mask.
            assert not torch.allclose(clean[0], noisy[0], atol=1e-4)
            assert not torch.allclose(clean[1], noisy[1], atol=1e-4)


def test_modality_without_any_valid_frame_is_finite_and_ignored(text_hidden: torch.Tensor, batch: dict) -> None:
    video_mask = batch["video_mask"].clone()
    video_mask[1] = False  # sample 1: no face in any frame
    cma = CrossModalAttention(D_T, D_V, D_E).eval()
    with torch.no_grad():
        out = cma(text_hidden, batch["video"], video_mask)
    assert torch.isfinite(out).all()
    # No frame to attend to: the CMA adds only W_O's bias to every token.
    torch.testing.assert_close(out[1], cma.w_o.bias.expand(out.shape[1], -1))

    tcmf = TCMF(D_T, D_A, D_V, D_E)
    out = tcmf_out(tcmf, text_hidden, batch, video_mask=video_mask)
    other = tcmf_out(tcmf, text_hidden, batch, video_mask=video_mask, video=torch.randn_like(batch["video"]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1], other[1])  # sample 1 does not depend on its (invalid) video
    assert not torch.allclose(out[0], other[0])  # sample 0 does


# ---- layer equations and switches ---------------------------------------------------------------


def test_residual_switch_follows_the_equations(text_hidden: torch.Tensor, batch: dict) -> None:
    outs = {}
    for residual in ("layernorm", "identity"):
        torch.manual_seed(2)  # LayerNorm init draws no random numbers: both get the same CMA/FFN weights
        layer = TCMFLayer(D_T, D_A, D_V, D_E, residual=residual).eval()
        args = (batch["audio"], batch["video"], batch["audio_mask"], batch["video_mask"])
        with torch.no_grad():
            outs[residual] = layer(text_hidden, *args)
            m = layer.cma_audio(text_hidden, batch["audio"], batch["audio_mask"])
            m = m + layer.cma_video(text_hidden, batch["video"], batch["video_mask"])
            layernorm = torch.nn.functional.layer_norm(text_hidden, (D_T,))  # fresh LN: weight 1, bias 0
            m = m + (layernorm if residual == "layernorm" else text_hidden)
            # Eq. 8 in eval mode (no dropout).
            torch.testing.assert_close(outs[residual], layer.ffn(layer.norm(m)) + m)
    assert not torch.allclose(outs["layernorm"], outs["identity"], atol=1e-3)


def test_c3_query_is_independent_of_the_text(text_hidden: torch.Tensor, batch: dict) -> None:
    cma = CrossModalAttention(D_T, D_A, D_E, text_query=False).eval()
    with torch.no_grad():
        out = cma(text_hidden, batch["audio"], batch["audio_mask"])
        assert out.shape == (2, 1, D_T)
        torch.testing.assert_close(out, cma(torch.randn_like(text_hidden), batch["audio"], batch["audio_mask"]))
        assert not torch.allclose(out, cma(text_hidden, batch["audio"] + 1.0, batch["audio_mask"]))
    assert n_params(cma) == CMA_A + D_T  # same weights as the full CMA plus the learned query

    tcmf = TCMF(D_T, D_A, D_V, D_E, text_query=False)
    out = tcmf_out(tcmf, text_hidden, batch)
    assert out.shape == text_hidden.shape
    # The text still flows through the residual path, and the whole output depends on it.
    other_text = text_hidden + 0.5 * torch.randn_like(text_hidden)
    assert not torch.allclose(out, tcmf_out(tcmf, other_text, batch), atol=1e-3)


# ---- pooling --------------------------------------------------------------------------------------


def test_masked_mean_ignores_padding_plain_mean_does_not() -> None:
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    torch.testing.assert_close(masked_mean(x, mask), torch.stack([x[0, :2].mean(0), x[1].mean(0)]))
    torch.testing.assert_close(masked_mean(x, mask, use_mask=False), x.mean(1))
    assert not torch.allclose(masked_mean(x, mask)[0], masked_mean(x, mask, use_mask=False)[0])


def test_gather_at_picks_each_samples_row() -> None:
    x = torch.arange(3 * 5 * 2, dtype=torch.float32).reshape(3, 5, 2)
    out = gather_at(x, torch.tensor([4, 0, 2]))
    torch.testing.assert_close(out, torch.stack([x[0, 4], x[1, 0], x[2, 2]]))


# ---- the whole model ------------------------------------------------------------------------------


def run(model: KEBR, batch: dict, pretrain: bool) -> dict[str, torch.Tensor]:
    keys = ("input_ids", "attention_mask", "audio", "audio_mask", "video", "video_mask")
    return model(**{k: batch[k] for k in keys}, mask_index=batch["mask_index"] if pretrain else None)


def test_forward_shapes_heads_and_eval_determinism(frozen_model: KEBR, batch: dict) -> None:
    frozen_model.eval()
    length = batch["input_ids"].shape[1]
    with torch.no_grad():
        pre = run(frozen_model, batch, pretrain=True)
        fine = run(frozen_model, batch, pretrain=False)
        again = run(frozen_model, batch, pretrain=False)
        assert pre["fused"].shape == (2, length, D_T)
        assert pre["pooled"].shape == fine["pooled"].shape == (2, D_T)
        assert pre["prediction"].shape == fine["prediction"].shape == (2,)
        torch.testing.assert_close(pre["fused"], fine["fused"])
        assert torch.equal(fine["prediction"], again["prediction"])
        # Pretraining: the fused vector at the [MASK] token through the pretraining head.
        at_mask = pre["fused"][torch.arange(2), batch["mask_index"]]
        torch.testing.assert_close(pre["prediction"], frozen_model.pretrain_head(at_mask))
        # Fine-tuning: the mean over real tokens only (sample 0 is the shorter, padded sentence).
        n0 = int(batch["attention_mask"][0].sum())
        assert n0 < length
        torch.testing.assert_close(fine["pooled"][0], fine["fused"][0, :n0].mean(0))
        torch.testing.assert_close(fine["prediction"], frozen_model.finetune_head(fine["pooled"]))


def test_gradients_reach_tcmf_not_the_frozen_lm(frozen_model: KEBR, batch: dict) -> None:
    frozen_model.train()
    assert not frozen_model.text.model.training  # a frozen LM stays a fixed feature extractor
    frozen_model.zero_grad(set_to_none=True)
    run(frozen_model, batch, pretrain=True)["prediction"].sum().backward()
    for name, p in frozen_model.tcmf.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(not p.requires_grad and p.grad is None for p in frozen_model.text.parameters())
    assert all(p.grad is None for p in frozen_model.finetune_head.parameters())  # unused in pretraining
    backbone, heads = frozen_model.param_groups(lr_backbone=5e-6, lr_head=1e-4)
    assert (backbone["lr"], heads["lr"]) == (5e-6, 1e-4)
    assert sum(p.numel() for p in backbone["params"]) == n_params(frozen_model.tcmf) == LAYER
    frozen_model.zero_grad(set_to_none=True)


def test_finetuning_model_loads_pretrained_weights_with_a_new_head(frozen_model: KEBR, batch: dict) -> None:
    config = KEBRConfig.from_dict(frozen_model.config.to_dict() | {"freeze_text": False})
    torch.manual_seed(3)
    model = KEBR.from_config(config.to_dict())
    new_head = {k: v.clone() for k, v in model.finetune_head.state_dict().items()}
    model.load_pretrained(frozen_model.state_dict())
    for name, value in frozen_model.state_dict().items():
        if name.startswith("finetune_head."):
            torch.testing.assert_close(model.state_dict()[name], new_head[name.removeprefix("finetune_head.")])
            assert not torch.equal(value, model.state_dict()[name])
        else:
            assert torch.equal(value, model.state_dict()[name]), name
    # Fine-tuning trains the LM too, at the backbone learning rate.
    model.train()
    run(model, batch, pretrain=False)["prediction"].sum().backward()
    # (BERT's pooler is not used: KEBR reads the last hidden states.)
    lm = [p for n, p in model.text.named_parameters() if ".pooler." not in f".{n}"]
    assert all(p.requires_grad and p.grad is not None for p in lm)
    backbone, _ = model.param_groups(5e-6, 1e-4)
    assert sum(p.numel() for p in backbone["params"]) == n_params(model.text) + LAYER
    with pytest.raises(ValueError, match="unknown KEBR config keys"):
        KEBRConfig.from_dict(config.to_dict() | {"heads": 2})


def test_text_only_reads_no_audio_or_video_and_heads_the_lms_pooled_states(batch: dict) -> None:
    torch.manual_seed(0)
    model = KEBR(KEBRConfig(d_audio=D_A, d_video=D_V, text_only=True)).eval()
    assert model.tcmf is None
    gen = torch.Generator().manual_seed(11)
    other = {"audio": torch.randn(2, T_A + 3, D_A, generator=gen), "audio_mask": torch.ones(2, T_A + 3, dtype=torch.bool),
             "video": torch.randn(2, T_V, D_V, generator=gen) * 100, "video_mask": torch.zeros(2, T_V, dtype=torch.bool)}
    with torch.no_grad():
        out = run(model, batch, pretrain=False)
        changed = model(batch["input_ids"], batch["attention_mask"], **other)
        states = model.text(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(out["prediction"], changed["prediction"])
    # The head on the mean of the LM's states over real tokens: no fusion in between.
    n0 = int(batch["attention_mask"][0].sum())
    torch.testing.assert_close(out["pooled"][0], states[0, :n0].mean(0))
    torch.testing.assert_close(out["prediction"], model.finetune_head(masked_mean(states, batch["attention_mask"])))
    # The LM and the head are all it trains: the LM at the backbone rate.
    backbone, heads = model.param_groups(5e-6, 1e-4)
    assert sum(p.numel() for p in backbone["params"]) == n_params(model.text)
    assert sum(p.numel() for p in heads["params"]) == n_params(model.pretrain_head) + n_params(model.finetune_head)


def test_a_zero_fusion_gate_starts_as_the_lm_alone_and_learns_to_open(batch: dict) -> None:
    """model.fusion_gate: fused = X_0 + gate * (X_K - X_0), gate 0 at initialisation. An untrained gated
    KEBR predicts what the text-only model with the same LM and head predicts; one step of the loss
    moves the gate (its gradient is TCMF's change projected on the loss's), and then audio matters."""
    torch.manual_seed(0)
    gated = KEBR(KEBRConfig(d_audio=D_A, d_video=D_V, fusion_gate=True)).eval()
    text_only = KEBR(KEBRConfig(d_audio=D_A, d_video=D_V, text_only=True)).eval()
    text_only.text.load_state_dict(gated.text.state_dict())
    text_only.finetune_head.load_state_dict(gated.finetune_head.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(run(gated, batch, pretrain=False)["prediction"],
                                   run(text_only, batch, pretrain=False)["prediction"])
    assert float(gated.fusion_gate) == 0.0
    backbone, _ = gated.param_groups(5e-6, 1e-4)
    assert any(p is gated.fusion_gate for p in backbone["params"])  # trained with TCMF
    gated.train()
    loss = run(gated, batch, pretrain=False)["prediction"].sub(torch.tensor([2.0, -2.0])).abs().mean()
    loss.backward()
    assert gated.fusion_gate.grad is not None and float(gated.fusion_gate.grad.abs()) > 0
    with torch.no_grad():
        gated.fusion_gate.fill_(0.5)
        gated.eval()
        louder = {**batch, "audio": batch["audio"] * 10}
        assert not torch.equal(run(gated, batch, pretrain=False)["prediction"],
                               run(gated, louder, pretrain=False)["prediction"])


def test_the_mcc_input_is_tcmfs_output_and_trains_the_lm_only_when_asked(batch: dict) -> None:
    """mcc.sequence: the MCC takes TCMF's X_K ("tcmf") or the gated sequence the head reads ("gated");
    mcc.trains_lm: False recomputes it from the LM's states with their gradient stopped: the same values,
    a gradient that reaches TCMF and the gate but not the LM; True lets it reach the LM."""
    torch.manual_seed(0)
    model = KEBR(KEBRConfig(d_audio=D_A, d_video=D_V, fusion_gate=True)).eval()  # no dropout: equal values
    with torch.no_grad():
        model.fusion_gate.fill_(0.25)
    keys = ("input_ids", "attention_mask", "audio", "audio_mask", "video", "video_mask")
    inputs = {k: batch[k] for k in keys}
    text = model.text(batch["input_ids"], batch["attention_mask"])
    x_k = model.tcmf(text, batch["audio"], batch["video"], batch["audio_mask"], batch["video_mask"])
    gated = text + 0.25 * (x_k - text)
    for sequence, expected in (("tcmf", x_k), ("gated", gated)):
        for trains_lm in (True, False):
            model.zero_grad()
            out = model(**inputs, mcc_sequence=sequence, mcc_trains_lm=trains_lm)
            torch.testing.assert_close(out["mcc_input"], expected)
            torch.testing.assert_close(out["fused"], gated)
            out["mcc_input"].square().sum().backward()
            lm_grad = sum(float(p.grad.abs().sum()) for p in model.text.parameters() if p.grad is not None)
            assert (lm_grad > 0) == trains_lm, (sequence, trains_lm)
            assert any(float(p.grad.abs().sum()) > 0 for p in model.tcmf.parameters())
            assert (model.fusion_gate.grad is not None and float(model.fusion_gate.grad) != 0) == (sequence == "gated")


def test_frozen_lm_dropout_switch(batch: dict) -> None:
    model = KEBR(KEBRConfig(d_audio=D_A, d_video=D_V, freeze_text=True)).train()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        fixed = model.text(ids, mask)
        assert torch.equal(model.text(ids, mask), fixed)  # frozen: a fixed feature extractor
        model.text.frozen_dropout = True
        model.train()
        noisy = model.text(ids, mask)
        assert not torch.equal(noisy, fixed) and not torch.equal(model.text(ids, mask), noisy)
        model.eval()
        assert torch.equal(model.text(ids, mask), fixed)
    assert not any(p.requires_grad for p in model.text.parameters())
