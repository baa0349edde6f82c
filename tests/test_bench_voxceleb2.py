"""bench/voxceleb2.py: the VoxCeleb2 projection's arithmetic, checked by value on hand-made bench JSON
(no media, no torch: each projection reads a few small files and the config schema)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "voxceleb2.py"
_spec = importlib.util.spec_from_file_location("bench_voxceleb2", SCRIPT)
vox = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = vox  # dataclasses look their module up there
_spec.loader.exec_module(vox)

N = vox.VOXCELEB2_CLIPS
SHARDS = math.ceil(N / 1000)
ENGLISH = 947_000  # what pretraining runs over: the spec's "the paper keeps 947K English clips"


def write(folder: Path, **files: dict | list[dict]) -> Path:
    """Bench results in ``folder``: name -> one JSON object, or a list of them as JSON lines (gpu_check)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        lines = value if isinstance(value, list) else [value]
        (folder / f"{name}.json").write_text("".join(json.dumps(v) + "\n" for v in lines))
    return folder


def spec(tmp_path: Path, hours: int = 2340, clips: int = 1_080_000) -> Path:
    """A DATA.md whose VoxCeleb2 row gives a mean of hours * 3600 / clips seconds (7.8 s by default)."""
    path = tmp_path / "DATA.md"
    path.write_text("| corpus | role | layout | size |\n|---|---|---|---|\n"
                    f"| VoxCeleb2 | pretraining | mp4 | dev {clips - 1000:,} / 5,994 / {hours - 10:,} h; "
                    "test 1,000 / 118 / 10 h; the paper keeps 947K English clips |\n")
    return path


BASE = {"loader": {"rows_per_s_per_process": 1000.0, "cold_rows_per_s": 100.0, "bytes_per_clip": 100_000},
        "visual": {"cpu_s_per_media_s": 0.04},
        "asr": {"cpu_s_per_clip": 1.0, "cpu_s_per_media_s": 0.1}}


def workers(rule: str, threads: int) -> int:
    """Jobs of ``rule`` alone on 32 cores: cores / threads, within the local profile's memory."""
    jobs = 32 // threads
    node = vox.profile_mem_mb()
    return min(jobs, node // vox.config_defaults()["resources"]["mem_mb"][rule]) if node else jobs


def run(tmp_path: Path, name: str = "r", **files: dict | list[dict]) -> dict:
    return vox.projection(write(tmp_path / name, **{**BASE, **files}), 32, 1, spec=spec(tmp_path))


def test_mean_clip_duration_comes_from_the_data_spec_else_7_8_s(tmp_path):
    assert vox.mean_clip_seconds(spec(tmp_path, hours=2340, clips=1_080_000))[0] == pytest.approx(7.8)
    assert vox.mean_clip_seconds(spec(tmp_path, hours=3000, clips=1_080_000))[0] == pytest.approx(10.0)
    seconds, source = vox.mean_clip_seconds(tmp_path / "missing.md")
    assert seconds == 7.8 and "assumed" in source


def test_cpu_stage_hours_by_value_and_doubling_the_rate_halves_the_work(tmp_path):
    slow = run(tmp_path, "slow", visual={"cpu_s_per_media_s": 0.04})
    fast = run(tmp_path, "fast", visual={"cpu_s_per_media_s": 0.02})  # twice the rate: half the CPU-s per clip
    start = vox.WORKER_START_S["visual"] * SHARDS  # once per shard job, whatever the rate
    for result, rate in ((slow, 0.04), (fast, 0.02)):
        visual = result["stages"]["visual"]
        jobs = workers("visual_features", visual["threads"])
        assert visual["measured"] and visual["workers"] == jobs
        assert visual["hours"] == pytest.approx((N * rate * 7.8 + start) / (jobs * visual["threads"]) / 3600, rel=1e-4)
    def work(result: dict) -> float:  # the stage's CPU-seconds over its clips, worker starts apart
        visual = result["stages"]["visual"]
        return visual["hours"] * visual["workers"] * visual["threads"] * 3600 - start

    assert work(fast) == pytest.approx(work(slow) / 2, rel=1e-4)
    # The features phase is one pool of 32 cores: its CPU part drops by exactly the visual work saved.
    saved = (work(slow) - work(fast)) / 32 / 3600
    assert slow["phases_hours"]["features_cpu_pool"] - fast["phases_hours"]["features_cpu_pool"] == \
        pytest.approx(saved, abs=2e-3)


def test_asr_uses_the_larger_of_per_clip_and_per_media_second_cost(tmp_path):
    per_clip = run(tmp_path, "a", asr={"cpu_s_per_clip": 1.0, "cpu_s_per_media_s": 0.1})["stages"]["asr"]
    per_media = run(tmp_path, "b", asr={"cpu_s_per_clip": 0.5, "cpu_s_per_media_s": 0.2})["stages"]["asr"]
    threads = vox.rule_threads()["asr"]  # rules/features.smk, whatever it says now
    assert per_clip["cost_per_clip"] == pytest.approx(1.0) and per_clip["threads"] == threads
    assert per_clip["workers"] == workers("asr", threads)
    assert per_media["cost_per_clip"] == pytest.approx(0.2 * 7.8)
    assert per_clip["kind"] == "cpu" and per_clip["measured"]


def test_gpu_rates_from_gpu_check_mark_stages_measured_and_set_the_hours(tmp_path):
    checks = [{"check": "asr", "clips_per_s": 200.0, "rtfx": 10_000.0, "jobs": 4, "threads_per_job": 2},
              {"check": "loader", "ok": True, "pretrain_samples_per_s": 2000.0, "batch_size": 32, "clips": 25_600,
               "sidecar_build_and_setup_s": 25.6},
              {"check": "steps", "ok": False, "error": "timed out"}]
    result = run(tmp_path, gpu_check=checks)
    pre, lm, asr = (result["stages"][k] for k in ("pretrain", "lm_cache", "asr"))
    assert {"pretrain", "lm_cache", "asr"} <= set(result["measured_stages"])
    assert pre["kind"] == "gpu" and pre["hours"] == pytest.approx(ENGLISH * 200 / 2000 / 3600, rel=1e-4)
    assert lm["hours"] == pytest.approx(ENGLISH * 25.6 / 25_600 / 3600, rel=1e-4)
    assert asr["kind"] == "gpu" and asr["hours"] == pytest.approx(N / 200 / 3600, rel=1e-4)
    assert result["features_cores_free"] == 32 - 4 * 2  # the GPU ASR jobs hold their cores
    assert result["phases_hours"]["features_gpu"] == pytest.approx(N / 200 / 3600, abs=1e-3)
    # A check run again (<check>_run2) replaces the first; the first stays in the notes.
    again = run(tmp_path, "again", gpu_check=[checks[1], {**checks[1], "check": "loader_run2",
                                                          "pretrain_samples_per_s": 1000.0, "run": "second"}])
    assert again["stages"]["pretrain"]["rate"] == pytest.approx(1000.0)
    assert any("earlier loader" in n and "2,000" in n for n in again["stages"]["pretrain"]["notes"])
    assert result["gpu_checks_failed"] == {"steps": "timed out"}
    # A later epoch of the same pretrain() (the compile check's eager run) is the steady state: it wins.
    steady = run(tmp_path, "steady", gpu_check=[checks[1], {"check": "compile", "eager_samples_per_s": 2500.0,
                                                          "compiled_samples_per_s": 5000.0}])
    assert steady["stages"]["pretrain"]["hours"] == pytest.approx(ENGLISH * 200 / 2500 / 3600, rel=1e-4)
    # The config's step (compile auto: CUDA graphs on one GPU, eager under DDP; amp off: fp32) where measured.
    variants = {"check": "compile_run2", "eager_bf16": {"samples_per_s": 1500.0}, "eager_fp32": {"samples_per_s": 1600.0},
                "cudagraphs_bf16": {"samples_per_s": 3000.0}, "cudagraphs_fp32": {"samples_per_s": 3500.0}}
    graphs = run(tmp_path, "graphs", gpu_check=[checks[1], variants])
    assert graphs["stages"]["pretrain"]["rate"] == pytest.approx(3500.0)
    ddp = vox.projection(write(tmp_path / "ddp", **BASE, gpu_check=[checks[1], variants]), 32, 2, spec=spec(tmp_path))
    assert ddp["stages"]["pretrain"]["rate"] == pytest.approx(2 * 1600.0)
    faster = run(tmp_path, "faster", gpu_check=[{**checks[1], "pretrain_samples_per_s": 4000.0}])
    assert faster["stages"]["pretrain"]["hours"] == pytest.approx(pre["hours"] / 2, rel=1e-4)
    # The loader's supply with the config's 4 workers caps a GPU rate measured with more of them.
    capped = run(tmp_path, "capped", gpu_check=[{**checks[1], "pretrain_samples_per_s": 10_000.0}])
    assert capped["stages"]["pretrain"]["rate"] == pytest.approx(1000.0 * 4)


def test_pretraining_runs_over_the_english_clips_and_every_clip_is_the_upper_bound(tmp_path):
    """Every clip is transcribed and featurised; the LM cache and the epochs run over the English clips the
    data spec counts (the paper's 947K), and the JSON gives the every-clip total beside it."""
    gpu = [{"check": "loader", "pretrain_samples_per_s": 2000.0, "clips": 1000, "sidecar_build_and_setup_s": 1.0}]
    folder = write(tmp_path / "r", **BASE, gpu_check=gpu)
    english = vox.projection(folder, 32, 1, spec=spec(tmp_path))
    every = vox.projection(folder, 32, 1, spec=spec(tmp_path), every_clip=True)
    assert (english["pretrain_clips"], every["pretrain_clips"]) == (ENGLISH, N)
    assert english["stages"]["asr"]["clips"] == every["stages"]["asr"]["clips"] == N
    assert english["stages"]["pretrain"]["hours"] == pytest.approx(ENGLISH * 200 / 2000 / 3600, rel=1e-4)
    assert every["stages"]["pretrain"]["hours"] == pytest.approx(N * 200 / 2000 / 3600, rel=1e-4)
    assert english["total_hours_pretraining_every_clip"] == every["total_hours"]
    # The other clips' epochs and their LM-cache build (1,000 clips a second here), nothing else.
    assert every["total_hours"] - english["total_hours"] == pytest.approx((N - ENGLISH) * (200 / 2000 + 1 / 1000) / 3600,
                                                                          abs=0.01)
    assert vox.english_clips(tmp_path / "no-spec.md")[0] == vox.FALLBACK_ENGLISH_CLIPS
    # ASR on the CPU (no GPU rate): the total if a GPU ASR kept pace, the CPU pool without ASR.
    p = english["phases_hours"]
    assert english["total_hours_if_gpu_asr_keeps_pace"] == pytest.approx(
        p["plan"] + english["features_hours_without_asr_on_cpu"] + p["features_fill"] + p["lm_cache"] + p["pretrain"],
        abs=0.01)
    assert english["total_hours_if_gpu_asr_keeps_pace"] < english["total_hours"]


def test_total_is_plan_plus_features_plus_the_pretrain_job_and_names_the_critical_path(tmp_path):
    # A slow GPU ASR bounds the features; the CPU stages then are off the critical path.
    result = run(tmp_path, gpu_check=[{"check": "asr", "clips_per_s": 10.0, "rtfx": 1e6, "jobs": 1},
                                      {"check": "loader", "pretrain_samples_per_s": 3000.0, "batch_size": 32,
                                       "clips": 1000, "sidecar_build_and_setup_s": 1.0}])
    p = result["phases_hours"]
    assert result["critical_path"] == ["plan", "asr", "lm_cache", "pretrain"]
    assert p["features"] == pytest.approx(max(p["features_cpu_pool"], p["features_gpu"]) + p["features_fill"], abs=2e-3)
    assert result["total_hours"] == pytest.approx(p["plan"] + p["features"] + p["lm_cache"] + p["pretrain"], abs=0.01)
    assert result["meets_target"] == (result["total_hours"] < 12)
    # The pool's memory: each job holds its rule's mem_mb while it runs (its CPU work over its threads).
    cpu_bound = run(tmp_path, "mem", asr={"cpu_s_per_clip": 5.0})
    mem, node = vox.config_defaults()["resources"]["mem_mb"], vox.profile_mem_mb()
    rules = {"asr": "asr", "audio": "audio_features", "visual": "visual_features", "assemble": "assemble_shard"}
    held = sum((st["cost_per_clip"] * N + st["job_overhead_s"] * SHARDS) / st["threads"] * mem[rules[name]]
               for name, st in cpu_bound["stages"].items() if name in rules)
    assert cpu_bound["phases_hours"]["features_memory_pool"] == pytest.approx(held / node / 3600, abs=2e-3)
    # CPU-bound features: every CPU stage shares the critical path.
    cpu_bound = run(tmp_path, "cpu", asr={"cpu_s_per_clip": 5.0})
    assert cpu_bound["critical_path"] == ["plan", "asr", "audio", "visual", "assemble", "lm_cache", "pretrain"]


def test_missing_files_give_estimates_not_crashes(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "gpu_check.json").write_text("not json\n")
    result = vox.projection(empty, 32, 1, spec=tmp_path / "no-spec.md")
    assert result["estimated_stages"] == ["asr", "visual", "lm_cache", "pretrain"]
    assert result["mean_clip_s"] == 7.8 and result["inputs"] == []
    assert math.isfinite(result["total_hours"]) and result["total_hours"] > 0
    assert all(math.isfinite(s["hours"]) for s in result["stages"].values())
    # Without any GPU measurement pretraining is an estimate from launches, FLOPs and (here: no) loader.
    pre = result["stages"]["pretrain"]
    assert not pre["measured"] and "estimate" in pre["basis"]
    assert pre["rate"] == pytest.approx(min(32 / (vox.STEP_OPS * vox.US_PER_OP * 1e-6),
                                            32 / (vox.STEP_FLOPS / (vox.ASSUMED_MFU * vox.PEAK_BF16))))


def test_the_cli_prints_a_table_then_one_json_line_and_writes_it(tmp_path):
    folder = write(tmp_path / "results", **BASE)
    out = subprocess.run([sys.executable, str(SCRIPT), "--cores", "32", "--gpus", "1", "--results", str(folder)],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    line = json.loads(lines[-1])
    assert line == json.loads((folder / "voxceleb2.json").read_text())
    assert {"total_hours", "critical_path", "measured_stages", "estimated_stages", "stages"} <= line.keys()
    assert any(row.startswith("pretrain") for row in lines[:-1])


def test_twice_the_cores_halve_the_cpu_pool_and_twice_the_gpus_halve_the_gpu_stages(tmp_path):
    folder = write(tmp_path / "r", **BASE, gpu_check=[{"check": "loader", "pretrain_samples_per_s": 2000.0,
                                                     "clips": 1000, "sidecar_build_and_setup_s": 1.0}])
    one = vox.projection(folder, 32, 1, spec=spec(tmp_path))
    more = vox.projection(folder, 64, 2, spec=spec(tmp_path))
    assert more["phases_hours"]["features_cpu_pool"] == pytest.approx(one["phases_hours"]["features_cpu_pool"] / 2,
                                                                      abs=1e-3)
    for stage in ("pretrain", "lm_cache"):
        assert more["stages"][stage]["hours"] == pytest.approx(one["stages"][stage]["hours"] / 2, rel=1e-4)
