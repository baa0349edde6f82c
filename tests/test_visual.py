"""Visual features on real media: a real face photo (skimage's astronaut) made into short videos."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import mediapipe as mp
import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation
from skimage import data, transform

from kebr.clips import Clip, ClipError
from kebr.features.visual import (
    COLUMNS,
    NO_FACE,
    NOSE_TIP,
    OPENFACE_COLUMNS,
    PYFEAT_MISSING,
    face_features,
    head_angles,
    head_axes,
    make_visual_extractor,
    mesh_points,
)
from kebr.media import DecodeStats, read_frames, write_clip

FPS_IN = 25  # source videos: 50 frames at 25 fps, the last at 1.96 s -> 12 samples at 6 fps


def col(name: str) -> int:
    return COLUMNS.index(name)


def face_crop() -> np.ndarray:
    return data.astronaut()[10:250, 110:290]  # 240 x 180, the face and some background


def moving_face(rotate_deg: float = 0.0) -> np.ndarray:
    """50 frames of the face crop panning in a small ellipse, optionally rotated counter-clockwise."""
    image = data.astronaut()
    frames = []
    for k in range(50):
        dx, dy = round(12 * np.sin(2 * np.pi * k / 50)), round(6 * np.cos(2 * np.pi * k / 50))
        crop = image[10 + dy:250 + dy, 110 + dx:290 + dx]
        if rotate_deg:
            crop = (transform.rotate(crop, rotate_deg, mode="edge") * 255).astype(np.uint8)
        frames.append(crop)
    return np.stack(frames)


def turned_photo(deg: float) -> np.ndarray:
    """The face photo turned about its vertical centre line by ``deg``, seen through a pinhole camera."""
    image = face_crop()
    h, w = image.shape[:2]
    f, th = 1.2 * w, np.deg2rad(deg)
    k = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    r = np.array([[np.cos(th), 0, np.sin(th)], [0, 1, 0], [-np.sin(th), 0, np.cos(th)]])
    centre = np.array([0, 0, f])
    homography = k @ (r + np.outer(centre - r @ centre, [0, 0, 1]) / f) @ np.linalg.inv(k)
    return cv2.warpPerspective(image, homography, (w, h), borderMode=cv2.BORDER_REPLICATE)


def encode_h264(path: Path, frames: np.ndarray, x264_params: str) -> Path:
    """An H.264 MP4 with the given x264 GOP settings (write_clip uses x264's defaults)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS_IN))
        stream.height, stream.width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "x264-params": f"{x264_params}:threads=1"}
        for image in frames:
            image = np.ascontiguousarray(image[:stream.height, :stream.width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def every_frame_sampled(path: str, fps: float, max_frames: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The reference sampler: decode every frame, then give each sample time 0, 1/fps... the first
    frame at or after it. Returns (times, frames, frames in the file)."""
    with av.open(path) as container:
        decoded = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    times, frames, t = [], [], 0.0
    for time_s, image in decoded:
        while time_s + 1e-6 >= t and len(times) < max_frames:
            times.append(t)
            frames.append(image)
            t += 1 / fps
    return np.array(times), np.stack(frames), len(decoded)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("visual")
    face = moving_face()
    rotated = moving_face(15.0)
    coffee = data.coffee()[100:340, 200:380]  # a real photo with no face, same size as the crop
    paths = {
        "face": write_clip(d / "face.mp4", face, FPS_IN),
        "mirror": write_clip(d / "mirror.mp4", face[:, :, ::-1], FPS_IN),
        "rotated": write_clip(d / "rotated.mp4", rotated, FPS_IN),
        "rotated_mirror": write_clip(d / "rotated_mirror.mp4", rotated[:, :, ::-1], FPS_IN),
        "coffee": write_clip(d / "coffee.mp4", np.stack([coffee] * 50), FPS_IN),
        "mixed": write_clip(d / "mixed.mp4", np.stack([face[0]] * 25 + [coffee] * 25), FPS_IN),
        # face, lost for a second, back: Face Mesh must detect it again
        "lost": write_clip(d / "lost.mp4", np.concatenate([face[:25], [coffee] * 25, face[25:]]), FPS_IN),
        # every frame a keyframe: nothing refers to the frames between samples
        "intra": encode_h264(d / "intra.mp4", face, "keyint=1"),
        # short open GOPs with B-frames: GOPs without a sample can be dropped, leading B-frames refer back
        "open_gop": encode_h264(d / "open_gop.mp4", np.concatenate([face] * 2), "keyint=9:open-gop=1:bframes=3"),
        "closed_gop": encode_h264(d / "closed_gop.mp4", np.concatenate([face] * 2), "keyint=9:bframes=3"),
    }
    for deg in (-30, 30):
        turned = turned_photo(deg)
        paths[f"turn{deg}"] = write_clip(d / f"turn{deg}.mp4", np.stack([turned] * 12), 6)
        mirrored = np.stack([turned[:, ::-1]] * 12)
        paths[f"turn{deg}_mirror"] = write_clip(d / f"turn{deg}_mirror.mp4", mirrored, 6)
    folder = d / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(face[i * 10]).save(folder / f"{i:03d}.png")
    paths["folder"] = folder
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def extractor():
    return make_visual_extractor("mediapipe")


@pytest.fixture(scope="module")
def lenient():
    return make_visual_extractor("mediapipe", require_face=False)


@pytest.fixture(scope="module")
def features(extractor, videos):
    """Features of each face video, extracted once."""
    names = ["face", "mirror", "rotated", "rotated_mirror",
             "turn-30", "turn30", "turn-30_mirror", "turn30_mirror"]
    return {name: extractor.extract(Clip(clip_id=name, video=videos[name])) for name in names}


def test_face_in_every_sampled_frame_with_a_frontal_pose(extractor, features):
    rows = features["face"]
    assert extractor.columns == COLUMNS and rows.shape == (12, len(COLUMNS)) and rows.dtype == np.float32
    assert np.all(rows[:, col("face_present")] == 1)
    assert np.all(rows[:, col("track_confidence")] > 0.8)
    # The astronaut looks at the camera: measured yaw -1, pitch 5, roll -3 degrees.
    assert np.all(np.abs(rows[:, col("head_yaw")]) < 8)
    assert np.all(np.abs(rows[:, col("head_roll")]) < 8)
    assert np.all(np.abs(rows[:, col("head_pitch")]) < 15)
    # Looking ahead: each iris within a fifth of a half eye width of the eye's centre.
    for c in ("gaze_r_h", "gaze_r_v", "gaze_l_h", "gaze_l_v"):
        assert np.all(np.abs(rows[:, col(c)]) < 0.2), c


def test_geometry_is_in_inter_ocular_units(features):
    rows = features["face"]
    # The head x axis runs through both outer eye corners, one IOD apart.
    np.testing.assert_allclose(rows[:, col("lmk_263_x")] - rows[:, col("lmk_33_x")], 1.0, atol=1e-4)
    np.testing.assert_allclose(rows[:, col("lmk_263_y")], rows[:, col("lmk_33_y")], atol=1e-4)
    # Adult face proportions (measured: mouth 0.71, nose-chin 0.93, lid gap 0.11 IOD).
    assert np.all((0.55 < rows[:, col("au_mouth_width")]) & (rows[:, col("au_mouth_width")] < 0.85))
    assert np.all((0.75 < rows[:, col("au_jaw_drop")]) & (rows[:, col("au_jaw_drop")] < 1.1))
    for c in ("au_eye_open_r", "au_eye_open_l"):
        assert np.all((0.06 < rows[:, col(c)]) & (rows[:, col(c)] < 0.18)), c
    # A closed-lip smile: corners above the lip line, lips slightly apart.
    assert np.all(rows[:, col("au_lip_corner_raise")] > 0.03)


def test_roll_follows_image_rotation_and_mirroring(features):
    roll = {name: float(np.median(rows[:, col("head_roll")])) for name, rows in features.items()}
    # Rotating the video 15 degrees counter-clockwise adds 15 degrees of roll.
    assert roll["rotated"] - roll["face"] == pytest.approx(15.0, abs=3.0)
    # Mirroring flips the sign of roll.
    assert roll["rotated_mirror"] == pytest.approx(-roll["rotated"], abs=3.0)
    assert roll["mirror"] == pytest.approx(-roll["face"], abs=2.0)
    # Expression proxies live in the head frame, so rotation leaves them unchanged.
    for c in ("au_mouth_width", "au_jaw_drop", "au_brow_gap"):
        upright, rotated = np.median(features["face"][:, col(c)]), np.median(features["rotated"][:, col(c)])
        assert rotated == pytest.approx(upright, abs=0.03), c


def test_yaw_follows_a_turned_photo_and_flips_when_mirrored(features):
    yaw = {name: float(np.median(rows[:, col("head_yaw")])) for name, rows in features.items()}
    # Turning the photo by +30 degrees points the nose to image left: negative yaw (measured -6,
    # +4: the mesh's face prior damps a flat photo's turn, but the sign is the real one).
    assert yaw["turn30"] < -3 < 2 < yaw["turn-30"]
    assert yaw["turn30_mirror"] == pytest.approx(-yaw["turn30"], abs=2.0)
    assert yaw["turn-30_mirror"] == pytest.approx(-yaw["turn-30"], abs=2.0)


def test_tracking_state_does_not_leak_between_clips(extractor, features, videos):
    # The mirrored clip runs between two runs of the same clip; both runs must be identical.
    again = extractor.extract(Clip(clip_id="face", video=videos["face"]))
    np.testing.assert_array_equal(again, features["face"])
    assert np.all(features["mirror"][:, col("face_present")] == 1)


def test_no_face_is_a_skip_or_flagged_rows(extractor, lenient, videos):
    with pytest.raises(ClipError, match=NO_FACE):
        extractor.extract(Clip(clip_id="coffee", video=videos["coffee"]))
    rows = lenient.extract(Clip(clip_id="coffee", video=videos["coffee"]))
    assert rows.shape == (12, len(COLUMNS)) and not rows.any()
    mixed = lenient.extract(Clip(clip_id="mixed", video=videos["mixed"]))
    # Face for the first second (samples at 0 .. 5/6 s), coffee after it.
    np.testing.assert_array_equal(mixed[:, col("face_present")], [1] * 6 + [0] * 6)
    assert mixed[:6, col("track_confidence")].min() > 0.8
    assert not mixed[6:].any()


def test_frame_count_follows_fps_and_max_frames(extractor, videos):
    clip = Clip(clip_id="face", video=videos["face"])
    assert len(make_visual_extractor("mediapipe", fps=10.0).extract(clip)) == 20  # 0 .. 1.9 s
    assert len(make_visual_extractor("mediapipe", max_frames=5).extract(clip)) == 5
    folder = extractor.extract(Clip(clip_id="folder", video=videos["folder"]))
    assert folder.shape == (3, len(COLUMNS)) and np.all(folder[:, 0] == 1)


def test_bad_inputs():
    with pytest.raises(ClipError, match="visual: no video"):
        make_visual_extractor("mediapipe").extract(Clip(clip_id="a", audio="a.wav"))
    with pytest.raises(ValueError, match="visual.backend"):
        make_visual_extractor("dlib")


# ---------------------------------------------------------------------------------------------
# What the stage does per frame: decoding, detection, threads (bench/visual.py measures the cost)


@pytest.mark.parametrize("name, fps, max_frames", [
    ("face", 6.0, 55), ("face", 10.0, 20), ("face", 30.0, 100), ("face", 6.0, 5), ("turn30", 10.0, 55),
    ("intra", 6.0, 55), ("open_gop", 6.0, 55), ("open_gop", 1.0, 55), ("closed_gop", 1.0, 55),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_read_frames_picks_what_decoding_every_frame_picks(videos, name, fps, max_frames, threads):
    stats = DecodeStats()
    times, frames = read_frames(videos[name], fps, max_frames, threads=threads, stats=stats)
    want_times, want_frames, n_in_file = every_frame_sampled(videos[name], fps, max_frames)
    np.testing.assert_array_equal(times, want_times)
    np.testing.assert_array_equal(frames, want_frames)  # the same frames, pixel for pixel
    assert stats.planned and not stats.replanned
    assert stats.decoded <= n_in_file and stats.sent <= stats.packets


def test_only_the_sampled_frames_are_decoded(videos):
    # Every frame a keyframe: 50 frames at 25 fps, 12 samples at 6 fps, 12 frames decoded.
    stats = DecodeStats()
    read_frames(videos["intra"], 6.0, 55, stats=stats)
    assert (stats.packets, stats.sent, stats.decoded) == (50, 12, 12)
    # x264's defaults (B-frames, one GOP): the B-frames nothing refers to and the tail after the last
    # sample are skipped (measured: 50 packets, 49 sent, 34 frames decoded).
    stats = DecodeStats()
    read_frames(videos["face"], 6.0, 55, stats=stats)
    assert stats.packets == 50 and stats.sent < 50 and stats.decoded < 40
    # Closed GOPs of 9 frames sampled at 1 fps: the GOPs with no sample are not decoded at all
    # (measured: 100 packets, 36 sent). Open GOPs are never dropped (their leading B-frames refer
    # back): every packet up to the last sample's (the frame at 3 s, the 76th) goes to the decoder.
    stats = DecodeStats()
    read_frames(videos["closed_gop"], 1.0, 55, stats=stats)
    assert stats.packets == 100 and stats.sent < 50
    stats = DecodeStats()
    read_frames(videos["open_gop"], 1.0, 55, stats=stats)
    assert stats.packets == 100 and stats.sent >= 76 and stats.planned and not stats.replanned


def test_the_detector_runs_once_on_a_steady_face(extractor, videos):
    rows = extractor.extract(Clip(clip_id="face", video=videos["face"]))
    assert extractor.detector_runs == 1
    # Its score, taken on the first frame, holds for the whole track.
    assert np.all(rows[:, col("track_confidence")] == rows[0, col("track_confidence")])
    assert extractor.decode_stats.decoded < 40  # of 50 frames (test_only_the_sampled_frames_are_decoded)


def test_the_detector_runs_again_after_tracking_is_lost(lenient, videos):
    rows = lenient.extract(Clip(clip_id="lost", video=videos["lost"]))
    # Face at 0 .. 5/6 s, coffee from 1 s, the face again from 2 s: 18 samples.
    np.testing.assert_array_equal(rows[:, col("face_present")], [1] * 6 + [0] * 6 + [1] * 6)
    # Detector on the first frame; not on the first coffee frame (tracked from the last face, where
    # tracking is lost); on the five coffee frames after it; and on the face's return.
    assert lenient.detector_runs == 7
    score = rows[:, col("track_confidence")]
    assert np.all(score[:6] == score[0]) and np.all(score[12:] == score[12]) and not score[6:12].any()
    # Where Face Mesh detects, its score is the one MediaPipe's short-range face detector (the model
    # the old confidence column ran on every frame) gives the face that contains the nose tip.
    _, frames = read_frames(videos["lost"], 6.0, 55)
    with mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.1) as detector:
        for t in (0, 12):
            detections = detector.process(frames[t]).detections
            with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
                tip = mesh.process(frames[t]).multi_face_landmarks[0].landmark[NOSE_TIP]
            scores = [d.score[0] for d in detections if _contains(d.location_data.relative_bounding_box, tip)]
            assert score[t] == pytest.approx(max(scores), abs=1e-6)


def _contains(box, point) -> bool:
    return box.xmin <= point.x <= box.xmin + box.width and box.ymin <= point.y <= box.ymin + box.height


def test_landmarks_read_with_numpy_equal_the_per_landmark_loop(videos):
    _, frames = read_frames(videos["rotated"], 6.0, 3)
    with mp.solutions.face_mesh.FaceMesh(refine_landmarks=True) as mesh:
        marks = mesh.process(frames[0]).multi_face_landmarks[0]
    h, w = frames[0].shape[:2]
    points = mesh_points(marks, w, h)
    assert points.shape == (478, 3) and points.dtype == np.float64
    np.testing.assert_array_equal(points, [(p.x * w, -p.y * h, -p.z * w) for p in marks.landmark])


def test_head_angles_are_scipys_intrinsic_yxz_euler_angles():
    rng = np.random.default_rng(0)
    for angles in rng.uniform([-80, -60, -80], [80, 60, 80], size=(200, 3)):
        axes = Rotation.from_euler("YXZ", angles, degrees=True).as_matrix()
        np.testing.assert_allclose(head_angles(axes), angles, atol=1e-9)


THREADS_SCRIPT = """
import sys
from pathlib import Path
from kebr.clips import Clip
from kebr.features.visual import make_visual_extractor
extractor = make_visual_extractor("mediapipe", threads=int(sys.argv[2]))
extractor.extract(Clip(clip_id="face", video=sys.argv[1]))
names = [p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm")]
print(sum(n.startswith("mediapipe") for n in names))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_one_mediapipe_thread_per_thread_the_job_has(videos):
    # In a fresh process, as in the stage's worker: MediaPipe's graph starts one thread per core by default.
    for threads in (1, 3):
        out = subprocess.run([sys.executable, "-c", THREADS_SCRIPT, videos["face"], str(threads)],
                             capture_output=True, text=True, check=True).stdout
        assert int(out.split()[-1]) == threads


def test_features_equal_the_every_frame_path_but_for_the_track_score(extractor, videos):
    """Decoding every frame, a stock FaceMesh, a Python loop over the 478 landmarks and scipy's Euler
    angles (the stage before it skipped frames, dropped its second detector and used numpy) give the
    same features; only track_confidence, now the score of the detection the track started from, differs."""
    for name in ("face", "rotated", "turn30_mirror"):
        rows = extractor.extract(Clip(clip_id=name, video=videos[name]))
        _, frames, _ = every_frame_sampled(videos[name], 6.0, 55)
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                                             min_detection_confidence=0.5, min_tracking_confidence=0.5) as mesh:
            for t, frame in enumerate(frames):
                marks = mesh.process(frame).multi_face_landmarks[0].landmark
                h, w = frame.shape[:2]
                points = np.array([(p.x * w, -p.y * h, -p.z * w) for p in marks], dtype=np.float64)
                want = face_features(points)
                yaw, pitch, roll = Rotation.from_matrix(head_axes(points)).as_euler("YXZ", degrees=True)
                want.update(head_yaw=yaw, head_pitch=pitch, head_roll=roll)
                assert rows[t, col("face_present")] == 1
                got = dict(zip(COLUMNS, rows[t]))
                for c in COLUMNS[2:]:
                    assert got[c] == pytest.approx(np.float32(want[c]), abs=1e-6), (name, t, c)


# ---------------------------------------------------------------------------------------------
# openface_csv


def featureextraction_header() -> list[str]:
    """OpenFace 2 FeatureExtraction -2Dfp -3Dfp -pdmparams -pose -aus -gaze, in RecorderCSV order."""
    names = [f"gaze_{eye}_{a}" for eye in (0, 1) for a in "xyz"] + ["gaze_angle_x", "gaze_angle_y"]
    names += [f"eye_lmk_{a}_{i}" for a in "xyXYZ" for i in range(56)]
    names += ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    names += [f"{a}_{i}" for a in "xyXYZ" for i in range(68)]
    names += ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + [f"p_{i}" for i in range(34)]
    regressed = [1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45]
    names += [f"AU{au:02d}_r" for au in regressed]
    names += [f"AU{au:02d}_c" for au in sorted(regressed + [28])]
    return names


def write_openface_csv(path, faces: dict[int, tuple[int, int]], header=None) -> dict[int, np.ndarray]:
    """faces: face_id -> (frames, successful frames). Values rounded the way OpenFace prints them."""
    rng = np.random.default_rng(0)
    header = header or featureextraction_header()
    values = {}
    lines = [", ".join(["frame", "face_id", "timestamp", "confidence", "success", *header])]
    for face_id, (n, good) in faces.items():
        values[face_id] = np.round(rng.normal(0, 50, size=(n, len(header))), 3)
        for i in range(n):
            success = int(i < good)
            lead = [str(i + 1), str(face_id), f"{i / 30:.3f}", "0.98" if success else "0.00", str(success)]
            lines.append(", ".join(lead + [f"{v:.3f}" for v in values[face_id][i]]))
    path.write_text("\n".join(lines) + "\n")
    return values


def test_openface_columns_are_featureextraction_order():
    assert len(featureextraction_header()) == 709
    assert OPENFACE_COLUMNS == featureextraction_header()


def test_openface_csv_round_trips_the_best_face(tmp_path):
    values = write_openface_csv(tmp_path / "spk__v__001.csv", {0: (20, 5), 1: (70, 60)})
    extractor = make_visual_extractor("openface_csv", openface_dir=str(tmp_path))
    assert extractor.columns == OPENFACE_COLUMNS
    rows = extractor.extract(Clip(clip_id="spk__v__001", video="elsewhere/001.mp4"))
    # Face 1 has more successful frames; its first 55 rows, leading five columns dropped.
    assert rows.shape == (55, 709) and rows.dtype == np.float32
    np.testing.assert_allclose(rows, values[1][:55], rtol=1e-6)
    # A .csv given as the clip's video is read directly, without openface_dir.
    direct = make_visual_extractor("openface_csv", max_frames=10)
    np.testing.assert_allclose(direct.extract(Clip(clip_id="x", video=str(tmp_path / "spk__v__001.csv"))),
                               values[1][:10], rtol=1e-6)


def test_openface_csv_rejections(tmp_path):
    extractor = make_visual_extractor("openface_csv", openface_dir=str(tmp_path))
    write_openface_csv(tmp_path / "short.csv", {0: (5, 5)}, header=featureextraction_header()[:-1])
    with pytest.raises(ClipError, match="708 feature columns, expected 709"):
        extractor.extract(Clip(clip_id="short"))
    swapped = featureextraction_header()
    swapped[0], swapped[1] = swapped[1], swapped[0]
    write_openface_csv(tmp_path / "swapped.csv", {0: (5, 5)}, header=swapped)
    with pytest.raises(ClipError, match="column 5 is 'gaze_0_y', expected 'gaze_0_x'"):
        extractor.extract(Clip(clip_id="swapped"))
    with pytest.raises(ClipError, match="OpenFace CSV not found"):
        extractor.extract(Clip(clip_id="absent"))
    with pytest.raises(ClipError, match="needs visual.openface_dir"):
        make_visual_extractor("openface_csv").extract(Clip(clip_id="x", video="x.mp4"))
    write_openface_csv(tmp_path / "noface.csv", {0: (8, 0)})
    with pytest.raises(ClipError, match=NO_FACE):
        extractor.extract(Clip(clip_id="noface"))
    lenient = make_visual_extractor("openface_csv", require_face=False, openface_dir=str(tmp_path))
    assert lenient.extract(Clip(clip_id="noface")).shape == (8, 709)


# ---------------------------------------------------------------------------------------------
# pyfeat


def test_pyfeat_detector_or_a_clear_skip(videos):
    try:
        extractor = make_visual_extractor("pyfeat")
    except RuntimeError as exc:
        assert PYFEAT_MISSING in str(exc)
        pytest.skip(str(exc))
    rows = extractor.extract(Clip(clip_id="face", video=videos["face"]))
    assert rows.shape == (12, len(extractor.columns))
    assert np.all(rows[:, 0] == 1) and np.all(rows[:, 1] > 0.5)
    yaw = rows[:, extractor.columns.index("Yaw")]
    assert np.all(np.abs(yaw) < 20)
