"""bench/text_only.py: merging other seeds' runs and comparing KEBR with text_only, checked by value
on hand-made run records (the training itself: tests/test_finetune.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_text_only", REPO / "bench" / "text_only.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def runs(bench, seeds: list[int], mae: list[float], corr: list[float]) -> list[dict]:
    return [{**{k: 0.5 for k in bench.METRICS}, "mae": m, "corr": c, "seed": s, "best_epoch": 1, "n_test": 24}
            for s, m, c in zip(seeds, mae, corr)]


def record(bench, path: Path, seeds: list[int], full: tuple, text: tuple, changes: list[str] = ()) -> Path:
    path.write_text(json.dumps({"seeds": seeds, "epochs": None, "videos": 30, "clips_per_video": 4,
                                "changes": list(changes), "runs": {"full": runs(bench, seeds, *full),
                                                                   "text_only": runs(bench, seeds, *text)}}))
    return path


def test_merged_seeds_are_compared_as_one_run(bench, tmp_path: Path) -> None:
    a = record(bench, tmp_path / "a.json", [0, 1], ([0.20, 0.30], [0.90, 0.96]), ([0.25, 0.25], [0.95, 0.95]))
    b = record(bench, tmp_path / "b.json", [2, 3], ([0.10, 0.40], [0.94, 0.92]), ([0.30, 0.20], [0.97, 0.93]))
    merged = bench.merge([a, b])
    assert merged["seeds"] == [0, 1, 2, 3]
    # MAE: full 0.25 (std 0.112) against 0.25 (std 0.035): not better, within the larger std: ties
    full_mae, text_mae = merged["summary"]["full"]["mae"], merged["summary"]["text_only"]["mae"]
    assert full_mae[0] == pytest.approx(0.25) and text_mae[0] == pytest.approx(0.25)
    assert full_mae[1] == pytest.approx(math.sqrt((0.05**2 * 2 + 0.15**2 * 2) / 4))
    assert merged["verdicts"]["full"]["mae"] == "ties"
    # Corr: 0.93 against 0.95 (stds 0.0224 and 0.0141): 0.02 within 0.0224: ties; paired differences
    # -0.05, 0.01, -0.03, -0.01: mean -0.02, standard error std(ddof=1) / 2
    assert merged["verdicts"]["full"]["corr"] == "ties"
    mean, se = merged["paired"]["full"]["corr"]
    assert mean == pytest.approx(-0.02) and se == pytest.approx(math.sqrt(0.0020 / 3) / 2)
    # the other metrics are equal in every run
    assert merged["verdicts"]["full"]["acc7"] == "ties" and merged["paired"]["full"]["acc7"] == [0.0, 0.0]


def test_a_clear_loss_is_a_loss(bench, tmp_path: Path) -> None:
    a = record(bench, tmp_path / "a.json", [0, 1, 2], ([0.40, 0.41, 0.42], [0.9] * 3), ([0.20, 0.21, 0.22], [0.9] * 3))
    result = bench.merge([a])
    assert result["verdicts"]["full"]["mae"] == "loses"
    assert result["paired"]["full"]["mae"] == pytest.approx([0.2, 0.0])


def test_only_other_seeds_of_one_setting_merge(bench, tmp_path: Path) -> None:
    a = record(bench, tmp_path / "a.json", [0, 1], ([0.2, 0.3], [0.9, 0.9]), ([0.2, 0.3], [0.9, 0.9]))
    again = record(bench, tmp_path / "again.json", [1, 2], ([0.2, 0.3], [0.9, 0.9]), ([0.2, 0.3], [0.9, 0.9]))
    other = record(bench, tmp_path / "other.json", [5], ([0.2], [0.9]), ([0.2], [0.9]), ["model.dropout=0.1"])
    with pytest.raises(SystemExit, match="seed"):
        bench.merge([a, again])
    with pytest.raises(SystemExit, match="differ"):
        bench.merge([a, other])
