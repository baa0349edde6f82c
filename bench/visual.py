"""The visual stage's CPU cost per sampled frame against a bare Face Mesh ``process()`` on the same frames.

    python bench/visual.py [--clips 6] [--rounds 5] [--seconds 8]

Clips: the tests' real face video (scikit-image's astronaut photo panning in a small ellipse,
``tests/test_visual.py::moving_face``), upright, rotated by +-10 degrees and mirrored, looped to
``--seconds`` at 25 fps and encoded as the pipeline's H.264 MP4s (``kebr.media.write_clip``: x264
veryfast, B-frames). VoxCeleb2's face tracks are 224x224 at 25 fps; these are 240x180.

Stage: the extractor the visual stage's worker builds from the default config
(``kebr.stages.visual_extractor_for``), ``extract(clip)`` on the MP4: decoding, Face Mesh,
features. Bare: ``mediapipe.solutions.face_mesh.FaceMesh`` with the stage's settings, ``reset()``
then ``process()`` on each of the frames the stage samples (decoded beforehand, not timed).
Both are timed in process CPU seconds (user + sys of every thread), one clip of each in turn
for ``--rounds`` rounds, so a busy machine weighs on both alike; models load before timing.

Prints the per-frame costs, their ratio and the user/sys split, then one JSON line (also written to
``bench/results/visual.json`` for ``bench/voxceleb2.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import mediapipe as mp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the face video helper lives in the tests

from kebr.clips import Clip  # noqa: E402
from kebr.config import validate_config  # noqa: E402
from kebr.media import read_frames, write_clip  # noqa: E402
from kebr.stages.work import visual_extractor_for  # noqa: E402
from tests.test_visual import FPS_IN, moving_face  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "visual.json"


def face_clips(folder: Path, n_clips: int, seconds: float) -> list[Path]:
    """``n_clips`` MP4s of ``seconds`` each: the moving face at 0/+10/-10 degrees, each also mirrored."""
    variants = []
    for deg in (0.0, 10.0, -10.0):
        frames = moving_face(deg)
        variants += [frames, frames[:, :, ::-1]]
    n_frames = round(seconds * FPS_IN)
    paths = []
    for i in range(n_clips):
        frames = variants[i % len(variants)]
        looped = np.concatenate([frames] * -(-n_frames // len(frames)))[:n_frames]
        paths.append(write_clip(folder / f"face{i}.mp4", looped, FPS_IN))
    return paths


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def threads_now() -> int:
    """Threads of this process (Linux /proc), 0 where unknown."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Threads:")), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()

    config = validate_config({"results": "unused", "datasets": {}})
    v = config["visual"]
    stage = visual_extractor_for(config)
    bare = mp.solutions.face_mesh.FaceMesh(
        static_image_mode=False, max_num_faces=1, refine_landmarks=True,
        min_detection_confidence=0.5, min_tracking_confidence=0.5)

    with tempfile.TemporaryDirectory(prefix="kebr-bench-visual-") as tmp:
        paths = face_clips(Path(tmp), args.clips, args.seconds)
        clips = [Clip(clip_id=p.stem, video=str(p)) for p in paths]
        frames = [[np.ascontiguousarray(f) for f in read_frames(p, v["fps"], v["max_frames"])[1]] for p in paths]

        def run_bare(clip_frames: list[np.ndarray]) -> int:
            bare.reset()
            found = 0
            for f in clip_frames:
                found += bare.process(f).multi_face_landmarks is not None
            return found

        # Models load lazily on the first frame: warm both up before timing.
        stage.extract(clips[0])
        run_bare(frames[0])

        totals = {"stage": 0.0, "bare": 0.0}
        user_sys = {"stage": [0.0, 0.0], "bare": [0.0, 0.0]}
        n_frames = found_stage = found_bare = 0
        decoded = packets = detector_runs = 0
        wall = time.perf_counter()
        for _ in range(args.rounds):
            for clip, clip_frames in zip(clips, frames):
                t0, c0 = os.times(), cpu_s()
                rows = stage.extract(clip)
                t1, c1 = os.times(), cpu_s()
                found_bare += run_bare(clip_frames)
                t2, c2 = os.times(), cpu_s()
                if len(rows) != len(clip_frames):
                    raise RuntimeError(f"{clip.clip_id}: the stage gave {len(rows)} rows for {len(clip_frames)} frames")
                found_stage += int(rows[:, 0].sum())
                decoded += stage.decode_stats.decoded
                packets += stage.decode_stats.packets
                detector_runs += stage.detector_runs
                n_frames += len(rows)
                totals["stage"] += c1 - c0
                totals["bare"] += c2 - c1
                user_sys["stage"][0] += t1.user - t0.user
                user_sys["stage"][1] += t1.system - t0.system
                user_sys["bare"][0] += t2.user - t1.user
                user_sys["bare"][1] += t2.system - t1.system
        wall = time.perf_counter() - wall

    per_frame = {k: v / n_frames for k, v in totals.items()}
    ratio = per_frame["stage"] / per_frame["bare"]
    media_s = args.rounds * args.clips * args.seconds
    print(f"{args.clips} clips x {args.rounds} rounds, {n_frames} sampled frames "
          f"({n_frames // (args.rounds * args.clips)} per {args.seconds:g} s clip), {wall:.0f} s wall; "
          f"faces found: stage {found_stage}, bare {found_bare}")
    for k in ("stage", "bare"):
        user, system = user_sys[k]
        print(f"  {k:5s}: {1e3 * per_frame[k]:6.2f} ms CPU per sampled frame "
              f"(user {1e3 * user / n_frames:.2f}, sys {1e3 * system / n_frames:.2f})")
    print(f"  stage decoded {decoded} of {packets} video packets read for {n_frames} sampled frames; "
          f"face detector runs per clip: {detector_runs / (args.rounds * args.clips):.1f}")
    print(f"  stage / bare: {ratio:.2f} (target <= 1.3); stage CPU per second of video: "
          f"{totals['stage'] / media_s:.4f} s; threads in this process: {threads_now()}")
    result = {
        "visual_cost_vs_bare": round(ratio, 3),
        "cpu_s_per_sampled_frame": round(per_frame["stage"], 5),
        "cpu_s_per_media_s": round(totals["stage"] / media_s, 5),
        "bare_cpu_s_per_sampled_frame": round(per_frame["bare"], 5),
        "sys_fraction_stage": round(user_sys["stage"][1] / max(totals["stage"], 1e-9), 3),
        "sampled_frames": n_frames,
        "fps": v["fps"],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }
    line = json.dumps(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
