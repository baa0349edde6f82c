"""Training-step throughput of KEBR: pretraining and fine-tuning samples/s, with kebr's vectorised MCC
against a faithful re-implementation of the reference's per-sample Python-loop cosine and MCC, on the
same model in the same run.

    python bench/train.py [--text-model bundled|PATH] [--batch-size 32] [--steps 5] [--rounds 3] [--device auto]

Inputs have the reference's sizes (39 tokens, 400 x 33 audio frames, 55 x 709 OpenFace frames). A
step is forward + L1 + MCC + backward + Adam, as in kebr/train/loop.py; data loading is not timed.
On CUDA it runs under bf16 autocast and also prints model FLOP utilisation (MFU: 6 x parameters x
tokens per second for the trained parts, 2 x for the frozen LM, against the GPU's dense bf16 peak).
Also times the MCC alone (forward + backward), ours against the loop.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from kebr.mcc import MCCLoss, reference_modality_cosines
from kebr.model import KEBR, KEBRConfig

# Dense bf16 tensor-core peaks, FLOP/s, by device name fragment.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def reference_mcc(fused: torch.Tensor, audio: torch.Tensor, video: torch.Tensor, g: float, weight: float,
                  stage: str) -> torch.Tensor:
    """The reference's MCC: cosines and loss one sample at a time in Python (spec section 4)."""
    cos_a, cos_v = reference_modality_cosines(fused, audio, video)
    losses = []
    for a, v in zip(cos_a, cos_v):
        if stage == "pretrain":
            c = (a + v) / 2
            losses.append(torch.abs(torch.cos(math.pi * (c + g))) if c >= 0 else 1 - c)
        elif a >= 0 and v >= 0:
            losses.append(torch.abs(torch.cos(math.pi * ((a + v) / 2 + g) * torch.exp(torch.abs(a - v) / 2))))
        else:
            losses.append(1 + torch.abs(a) + torch.abs(v))
    return weight * torch.stack(losses).mean()


def batch(b: int, device: torch.device, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(1000, vocab, (b, 39), generator=g).to(device),
        "attention_mask": torch.ones(b, 39, dtype=torch.bool, device=device),
        "audio": torch.randn(b, 400, 33, generator=g).to(device),
        "audio_mask": torch.ones(b, 400, dtype=torch.bool, device=device),
        "video": torch.randn(b, 55, 709, generator=g).to(device),
        "video_mask": torch.ones(b, 55, dtype=torch.bool, device=device),
        "mask_index": torch.full((b,), 5, device=device),
        "target": torch.rand(b, generator=g).to(device) * 6 - 3,
    }


def seconds_per_call(fn, calls: int, device: torch.device) -> float:
    """Mean wall seconds of ``fn()`` over ``calls`` calls, after one untimed warm-up call."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


def time_steps(model: KEBR, inputs: dict[str, torch.Tensor], stage: str, mcc, steps: int,
               device: torch.device) -> float:
    """Seconds per training step (after one warm-up step)."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    kwargs = {k: v for k, v in inputs.items() if k != "target" and (stage == "pretrain" or k != "mask_index")}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step() -> None:
        with autocast:
            out = model(**kwargs)
            loss = torch.nn.functional.l1_loss(out["prediction"].float(), inputs["target"])
            loss = loss + mcc(out["fused"], inputs["audio"], inputs["video"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return seconds_per_call(step, steps, device)


def time_mcc_only(mcc, b: int, d_text: int, device: torch.device, steps: int) -> float:
    """Seconds per MCC forward + backward alone, on the model's shapes (fused (B, 39, d_text))."""
    g = torch.Generator().manual_seed(1)
    fused = torch.randn(b, 39, d_text, generator=g).to(device).requires_grad_()
    audio = torch.randn(b, 400, 33, generator=g).to(device)
    video = torch.randn(b, 55, 709, generator=g).to(device)
    return seconds_per_call(lambda: mcc(fused, audio, video).backward(), steps, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--text-model", default="bundled")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    torch.manual_seed(0)

    report: dict[str, object] = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                                 "threads": torch.get_num_threads(), "batch_size": args.batch_size,
                                 "text_model": args.text_model}
    for stage, (g, weight) in (("pretrain", (0.25, 0.5)), ("finetune", (0.2, 1.0))):
        config = KEBRConfig(d_audio=33, d_video=709, text_model=args.text_model, freeze_text=stage == "pretrain")
        model = KEBR(config).to(device).train()
        inputs = batch(args.batch_size, device, model.text.model.config.vocab_size)
        ours = MCCLoss(g=g, variant="reference", stage=stage, weight=weight)
        loop = lambda f, a, v: reference_mcc(f, a, v, g, weight, stage)  # noqa: E731
        # Alternate the two and keep each one's median, so drift in machine load hits both alike.
        times: dict[str, list[float]] = {"ours": [], "loop": []}
        for _ in range(args.rounds):
            times["ours"].append(time_steps(model, inputs, stage, ours, args.steps, device))
            times["loop"].append(time_steps(model, inputs, stage, loop, args.steps, device))
        t_ours, t_loop = (statistics.median(times[k]) for k in ("ours", "loop"))
        result = {"samples_per_s": round(args.batch_size / t_ours, 2),
                  "samples_per_s_reference_loop_mcc": round(args.batch_size / t_loop, 2),
                  "speedup": round(t_loop / t_ours, 3)}
        # The MCC alone: the step above is dominated by the model on CPU, which hides the loop's cost.
        d_text = model.text.model.config.hidden_size
        m_ours = time_mcc_only(ours, args.batch_size, d_text, device, 10 * args.steps)
        m_loop = time_mcc_only(loop, args.batch_size, d_text, device, 10 * args.steps)
        result.update({"mcc_ms": round(1e3 * m_ours, 3), "mcc_ms_reference_loop": round(1e3 * m_loop, 3),
                       "mcc_speedup": round(m_loop / m_ours, 2)})
        if device.type == "cuda":
            trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
            frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
            tokens_per_s = args.batch_size * 39 / t_ours
            peak = next((v for k, v in PEAK_BF16.items() if k in report["device"]), None)
            if peak:
                result["mfu"] = round((6 * trained + 2 * frozen) * tokens_per_s / peak, 4)
        report[stage] = result
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
