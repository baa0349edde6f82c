"""Planning a VoxCeleb2-sized corpus: the real `plan` job and `snakemake -n pretrain_<dataset>` on a
1,128,246-clip manifest, and the plan of a VoxCeleb2 folder layout of 100,000 empty files.

    python bench/dag.py [--out-dir DIR] [--clips N] [--layout-files N]

Paths in the manifest need not exist (planning reads no media). Prints one JSON object: seconds
and peak memory (MB, the child process's max RSS) of each step, clips, shards and DAG jobs.
Targets (issue 7): plan < 180 s, dry run < 60 s, both < 4 GB; the layout walk < 60 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kebr import paths

REPO = Path(__file__).resolve().parents[1]
VOXCELEB2_DEV_CLIPS = 1_128_246  # VoxCeleb2 dev: 1,092,009; test: 36,237


def run(cmd: list[str], cwd: Path) -> dict:
    """Run ``cmd``: its seconds, peak RSS in MB (os.wait4's rusage of that child) and output."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr[-3000:]}")
    return {"seconds": round(seconds, 2), "peak_mb": round(usage.ru_maxrss / 1024), "stdout": stdout, "stderr": stderr}


def write_manifest(path: Path, clips: int) -> None:
    """VoxCeleb2-shaped ids: ~6,000 speakers, ~25 videos each, numbered utterances."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "video", "speaker"])
        for i in range(clips):
            speaker, video, utt = f"id{i // 188:05d}", f"yt{(i // 8) % 25:02d}", f"{i % 8 + 1:05d}"
            clip = f"{speaker}/{video}/{utt}"
            writer.writerow([clip, f"/data/VoxCeleb2/dev/mp4/{clip}.mp4", speaker])


def write_layout(root: Path, files: int) -> None:
    """``dev/mp4/<speaker>/<video>/<utt>.mp4``: empty files, 20 speakers' worth per 1,000."""
    for i in range(files):
        folder = root / "dev" / "mp4" / f"id{i // 50:05d}" / f"yt{(i // 10) % 5:02d}"
        if i % 10 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i % 10 + 1:05d}.mp4").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="kebr-dag-")))
    parser.add_argument("--clips", type=int, default=VOXCELEB2_DEV_CLIPS)
    parser.add_argument("--layout-files", type=int, default=100_000)
    args = parser.parse_args()
    work = args.out_dir.absolute()
    work.mkdir(parents=True, exist_ok=True)
    write_manifest(work / "manifest.csv", args.clips)
    layout = work / "VoxCeleb2"
    if not layout.exists():
        write_layout(layout, args.layout_files)
    (work / "config.yaml").write_text(
        "results: results\n"
        "datasets:\n"
        f"  voxceleb2: {{layout: manifest, manifest: {work / 'manifest.csv'}}}\n"
        f"  layout: {{layout: voxceleb2, root: {layout}}}\n")
    python = sys.executable
    plan = run([python, "-m", "kebr", "plan", "--config", "config.yaml", "--dataset", "voxceleb2",
                "--out", paths.plan_dir("results", "voxceleb2")], work)
    planned = json.loads(plan["stdout"].strip().splitlines()[-1])
    dry = run([python, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--quiet", "rules", "--", "pretrain_voxceleb2"], work)
    jobs = int(re.search(r"^total\s+(\d+)$", dry["stdout"] + dry["stderr"], re.M).group(1))
    walk = run([python, "-m", "kebr", "plan", "--config", "config.yaml", "--dataset", "layout",
                "--out", paths.plan_dir("results", "layout")], work)
    walked = json.loads(walk["stdout"].strip().splitlines()[-1])
    print(json.dumps({
        "clips": planned["clips"], "shards": planned["shards"],
        "plan_s": plan["seconds"], "plan_peak_mb": plan["peak_mb"],
        "dry_run_s": dry["seconds"], "dry_run_peak_mb": dry["peak_mb"], "dry_run_jobs": jobs,
        "layout_files": walked["clips"], "layout_plan_s": walk["seconds"], "layout_plan_peak_mb": walk["peak_mb"],
        "cpus": os.cpu_count(), "python": platform.python_version(),
    }, indent=2))


if __name__ == "__main__":
    main()
