"""Per-frame visual features behind one interface, three backends (config ``visual.backend``).

- ``mediapipe`` (offline default): MediaPipe Face Mesh (478 points with iris, tracking mode) on
  frames sampled at ``fps``; a fixed vector of ``len(COLUMNS)`` values per frame, described below.
- ``openface_csv`` (parity with the reference, spec section 9): the 709 feature columns of OpenFace 2
  ``FeatureExtraction -2Dfp -3Dfp -pdmparams -pose -aus -gaze`` CSVs computed elsewhere.
- ``pyfeat``: py-feat's ``Detector`` (optional extra ``kebr[pyfeat]``; its weights come from a hub).

Every backend returns (T, d) float32 rows, T <= ``max_frames``, unpadded (padding to ``max_frames``
is the shard writer's job), and raises ``ClipError`` with a reason when a clip has no usable frame.

The ``mediapipe`` vector
------------------------
Geometry is computed in a head-centred frame so that expression proxies do not change when the
head turns. Landmarks are taken in pixels (x right, y up, z towards the camera; MediaPipe's z has
x's scale). The head axes are: x from the subject's right outer eye corner (mesh 33) to the left
one (263); y from the mouth-corner midpoint (61, 291) to the eye-corner midpoint, made orthogonal
to x; z = x cross y, out of the face. Every point is then expressed in these axes, centred on the
nose tip (1) and divided by the inter-ocular distance (IOD, 33 to 263 in 3-D), so all distances
below are in IODs. "r"/"l" are the SUBJECT's right/left (image left/right in an unmirrored video).

=========================  ====================================================================
column                     meaning
=========================  ====================================================================
face_present               1 if Face Mesh found a face in the frame, else 0 and every other
                           column of the row is 0 (a flagged row, never a silent one)
track_confidence           score in [0, 1] of Face Mesh's own face detector (the short-range
                           model) for the face it tracks, from the frame where it last detected
                           it: the first frame with the face, and again after tracking was lost.
                           Frames in between, where Face Mesh tracks the face from the last
                           frame's landmarks and runs no detector, repeat that score. At least
                           0.5 (Face Mesh's min_detection_confidence) on every face row.
head_yaw                   degrees; + = nose turns towards image right (subject's left)
head_pitch                 degrees; + = nose down. 0 = the eye-mouth plane faces the camera
head_roll                  degrees; + = counter-clockwise in the image (subject's left eye up)
                           (intrinsic Y-X-Z Euler angles of the head axes in camera axes)
gaze_r_h, gaze_l_h         iris centre (468 right, 473 left) minus the eye-corner midpoint along
                           head x, over half the eye width; + = towards image right
gaze_r_v, gaze_l_v         iris centre minus the lid midpoint (159/145, 386/374) along head y,
                           over half the eye width; + = up
au_brow_inner_raise_r/l    inner brow (107/336) above inner eye corner (133/362)      ~AU1
au_brow_outer_raise_r/l    outer brow (70/300) above outer eye corner (33/263)        ~AU2
au_brow_gap                distance between inner brows (107-336); smaller = furrow   ~AU4
au_eye_open_r/l            lid distance (159-145 / 386-374); larger = widened ~AU5, 0 = closed ~AU43
au_lip_corner_raise        mean height of lip corners (61, 291) above the inner-lip midpoint
                           (13, 14); + = pulled up ~AU12, - = depressed ~AU15
au_mouth_width             lip corner distance (61-291)                               ~AU12/AU20
au_mouth_open              inner lip gap (13-14)                                      ~AU25
au_jaw_drop                nose tip to chin (1-152)                                   ~AU26/AU27
au_upper_lip_raise         subnasale to upper lip top (2-0); smaller = raised         ~AU10
au_lip_pucker              outer-lip midpoint (0, 17) in front of the lip corners, along head z;
                           + = lips pushed forward                                   ~AU18/AU22
lmk_<i>_x, lmk_<i>_y       head-frame x, y (IODs, origin nose tip) of mesh point i for the 36
                           points of LANDMARK_SUBSET: brows, eyes, nose, lips, face contour
=========================  ====================================================================

Several faces: Face Mesh runs with ``max_num_faces=1``, so it tracks the face its detector scores
highest when tracking (re)starts (with two faces side by side, that was the larger one). Tracking
state never leaks from one clip into the next: the graph is reset at the start of every clip.
Without it a clip starts from the last clip's face box and can lose its first frames; a reset
(under 1 ms) gives the same output as a new graph (3 ms) and keeps the loaded models.

The detector runs once per clip while the face stays tracked. Before this version (a column named
``confidence``) a second detector ran on every sampled frame to score it; on the frame where Face
Mesh detects, the two scores are the same number (same model, same image), and the landmarks and
every other column are unchanged (tests/test_visual.py compares both paths). The column's new name
marks the change in the stage's and the shard's ``columns`` meta, so shards of the two kinds never
mix in one training set.

Cost (``python bench/visual.py``): decoding reads only the frames the samples need
(``kebr.media.read_frames``), Face Mesh's landmarks are read as one numpy array, and one job uses
``threads`` threads (the rule's ``threads``, which Snakemake exports as OMP_NUM_THREADS; 1 outside
Snakemake) for the video decoder, MediaPipe's graph and OpenCV, so parallel jobs do not
oversubscribe the cores. The per-frame numpy arrays are too small for BLAS to start its threads.
The first frame a process sees takes about 0.2 s more (the models load lazily).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import cv2
import mediapipe as mp
import numpy as np
import pandas as pd
from mediapipe.framework import calculator_pb2
from mediapipe.framework.thread_pool_executor_pb2 import ThreadPoolExecutorOptions
from mediapipe.python.solution_base import SolutionBase
from mediapipe.python.solutions import face_mesh

from kebr.clips import Clip, ClipError, SkipKind
from kebr.media import DecodeStats, read_frames

BACKENDS = ("mediapipe", "openface_csv", "pyfeat")
NO_FACE = "visual: no face detected in any sampled frame"


class VisualExtractor(Protocol):
    name: str
    columns: list[str]

    def extract(self, clip: Clip) -> np.ndarray:
        """(T, d) float32, T <= max_frames, unpadded; raises ClipError with a reason on failure."""
        ...


def make_visual_extractor(
    backend: str,
    fps: float = 6.0,
    max_frames: int = 55,
    require_face: bool = True,
    openface_dir: str | None = None,
    threads: int | None = None,
) -> VisualExtractor:
    """The extractor for config ``visual.backend``; models are loaded once, here. ``threads``: the
    mediapipe backend's threads (default: ``job_threads()``)."""
    if backend == "mediapipe":
        return MediaPipeExtractor(fps, max_frames, require_face, threads)
    if backend == "openface_csv":
        return OpenFaceCsvExtractor(max_frames, require_face, openface_dir)
    if backend == "pyfeat":
        return PyFeatExtractor(fps, max_frames, require_face)
    raise ValueError(f"visual.backend must be one of {BACKENDS}, got {backend!r}")


def job_threads() -> int:
    """Threads one visual job may use: the rule's ``threads``, which Snakemake exports to the job as
    OMP_NUM_THREADS; 1 when that is unset (a job on one core should start no thread pools)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS") or 1))
    except ValueError:
        return 1


def _sample_frames(clip: Clip, fps: float, max_frames: int, threads: int = 1,
                   stats: DecodeStats | None = None) -> np.ndarray:
    if clip.video is None:
        raise ClipError("visual: no video", kind=SkipKind.NO_VIDEO_STREAM)
    _, frames = read_frames(clip.video, fps, max_frames, threads=threads, stats=stats)
    return frames


# ----------------------------------------------------------------------------------------------
# mediapipe

NOSE_TIP, CHIN, SUBNASALE = 1, 152, 2
EYE_R = {"outer": 33, "inner": 133, "upper": 159, "lower": 145, "iris": 468}
EYE_L = {"outer": 263, "inner": 362, "upper": 386, "lower": 374, "iris": 473}
BROW_R = {"inner": 107, "outer": 70}
BROW_L = {"inner": 336, "outer": 300}
LIP_CORNER_R, LIP_CORNER_L = 61, 291
LIP_UPPER_OUTER, LIP_LOWER_OUTER, LIP_UPPER_INNER, LIP_LOWER_INNER = 0, 17, 13, 14

LANDMARK_SUBSET = (
    70, 105, 107, 300, 334, 336,  # brows: outer, middle, inner (right, then left)
    33, 133, 159, 145, 263, 362, 386, 374,  # eyes: corners and lids
    168, 2, 98, 327,  # nose: bridge, subnasale, alae (the tip is the origin)
    61, 291, 0, 17, 13, 14, 37, 267, 84, 314,  # lips: corners, outer/inner midline, sides
    10, 234, 454, 172, 397, 148, 377, 152,  # contour: forehead, cheeks, jaw angles, chin
)

AU_COLUMNS = [
    "au_brow_inner_raise_r", "au_brow_inner_raise_l", "au_brow_outer_raise_r", "au_brow_outer_raise_l",
    "au_brow_gap", "au_eye_open_r", "au_eye_open_l", "au_lip_corner_raise", "au_mouth_width",
    "au_mouth_open", "au_jaw_drop", "au_upper_lip_raise", "au_lip_pucker",
]
# The mesh points face_features reads one by one.
_FEATURE_POINTS = sorted({NOSE_TIP, CHIN, SUBNASALE, *EYE_R.values(), *EYE_L.values(), *BROW_R.values(),
                          *BROW_L.values(), LIP_CORNER_R, LIP_CORNER_L, LIP_UPPER_OUTER, LIP_LOWER_OUTER,
                          LIP_UPPER_INNER, LIP_LOWER_INNER})
LANDMARK_COLUMNS = [f"lmk_{i}_{axis}" for i in LANDMARK_SUBSET for axis in ("x", "y")]
COLUMNS = [
    "face_present", "track_confidence",
    "head_yaw", "head_pitch", "head_roll",
    "gaze_r_h", "gaze_r_v", "gaze_l_h", "gaze_l_v",
    *AU_COLUMNS,
    *LANDMARK_COLUMNS,
]

# Face Mesh's landmarks as protobuf bytes: 478 NormalizedLandmark messages of exactly x, y, z (field
# tag, length 15, then three tagged little-endian floats), 17 bytes each; read in one go with numpy.
_LANDMARK_SIZE = 17
_TAG_OFFSETS = [0, 1, 2, 7, 12]  # message tag, its length, then the x, y and z field tags
_TAG_VALUES = np.array([0x0A, 15, 0x0D, 0x15, 0x1D], dtype=np.uint8)
_XYZ = np.dtype([("x", "<f4", (1,)), ("_y", "u1"), ("y", "<f4", (1,)), ("_z", "u1"), ("z", "<f4", (1,))])


def mesh_points(landmarks: Any, width: int, height: int) -> np.ndarray:
    """(n, 3) float64 pixels (x right, y up, z towards the camera, z in x's scale) from a Face Mesh
    ``NormalizedLandmarkList``, without a Python step per landmark."""
    raw = landmarks.SerializeToString()
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _LANDMARK_SIZE) if len(raw) % _LANDMARK_SIZE == 0 else None
    if records is None or not (records[:, _TAG_OFFSETS] == _TAG_VALUES).all():
        # Another MediaPipe (one that sets visibility or presence) needs another reader: fail loudly.
        raise RuntimeError("visual: Face Mesh landmarks are not plain (x, y, z) records; "
                           f"mediapipe {mp.__version__} is not the version this reader was written for")
    fields = np.ascontiguousarray(records[:, 3:]).view(_XYZ)[:, 0]
    xyz = np.concatenate([fields["x"], fields["y"], fields["z"]], axis=1).astype(np.float64)
    return xyz * np.array([width, -height, -width], dtype=np.float64)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def head_axes(points: np.ndarray) -> np.ndarray:
    """3x3 matrix whose columns are the head's x, y, z axes in camera axes (see module docstring)."""
    x = _unit(points[EYE_L["outer"]] - points[EYE_R["outer"]])
    eyes = (points[EYE_R["outer"]] + points[EYE_L["outer"]]) / 2
    mouth = (points[LIP_CORNER_R] + points[LIP_CORNER_L]) / 2
    up = eyes - mouth
    y = _unit(up - (up @ x) * x)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def head_angles(axes: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees: intrinsic Y-X-Z Euler angles of ``axes``, R = Ry(yaw) Rx(pitch) Rz(roll).

    The closed form of scipy's ``Rotation.from_matrix(axes).as_euler("YXZ")`` (equal to 1e-9 degrees,
    tested) at a tenth of its cost; a head never pitches the 90 degrees where the angles degenerate."""
    (_, _, r02), (r10, r11, r12), (_, _, r22) = axes.tolist()
    pitch = math.asin(min(1.0, max(-1.0, -r12)))
    return math.degrees(math.atan2(r02, r22)), math.degrees(pitch), math.degrees(math.atan2(r10, r11))


def face_features(points: np.ndarray) -> dict[str, float]:
    """Every column but face_present/track_confidence from 478 mesh points in pixels (x right, y up, z out)."""
    axes = head_axes(points)
    iod = np.linalg.norm(points[EYE_L["outer"]] - points[EYE_R["outer"]])
    q_array = (points - points[NOSE_TIP]) @ axes / iod  # head frame, in IODs
    # The few points used below as Python floats: scalar arithmetic on numpy elements costs more
    # than the landmark model on small frames.
    q = dict(zip(_FEATURE_POINTS, q_array[_FEATURE_POINTS].tolist()))

    def dist(a: int, b: int) -> float:
        return math.dist(q[a], q[b])

    def mid(a: int, b: int) -> list[float]:
        return [(u + v) / 2 for u, v in zip(q[a], q[b])]

    values = dict(zip(("head_yaw", "head_pitch", "head_roll"), head_angles(axes)))
    for side, eye in (("r", EYE_R), ("l", EYE_L)):
        half_width = abs(q[eye["inner"]][0] - q[eye["outer"]][0]) / 2
        eye_mid_x = (q[eye["inner"]][0] + q[eye["outer"]][0]) / 2
        lids_mid_y = (q[eye["upper"]][1] + q[eye["lower"]][1]) / 2
        values[f"gaze_{side}_h"] = (q[eye["iris"]][0] - eye_mid_x) / half_width
        values[f"gaze_{side}_v"] = (q[eye["iris"]][1] - lids_mid_y) / half_width
    for side, eye, brow in (("r", EYE_R, BROW_R), ("l", EYE_L, BROW_L)):
        values[f"au_brow_inner_raise_{side}"] = q[brow["inner"]][1] - q[eye["inner"]][1]
        values[f"au_brow_outer_raise_{side}"] = q[brow["outer"]][1] - q[eye["outer"]][1]
        values[f"au_eye_open_{side}"] = dist(eye["upper"], eye["lower"])
    values["au_brow_gap"] = dist(BROW_R["inner"], BROW_L["inner"])
    inner_lip_mid = mid(LIP_UPPER_INNER, LIP_LOWER_INNER)
    corners_mid = mid(LIP_CORNER_R, LIP_CORNER_L)
    outer_lip_mid = mid(LIP_UPPER_OUTER, LIP_LOWER_OUTER)
    values["au_lip_corner_raise"] = corners_mid[1] - inner_lip_mid[1]
    values["au_mouth_width"] = dist(LIP_CORNER_R, LIP_CORNER_L)
    values["au_mouth_open"] = dist(LIP_UPPER_INNER, LIP_LOWER_INNER)
    values["au_jaw_drop"] = dist(NOSE_TIP, CHIN)
    values["au_upper_lip_raise"] = dist(SUBNASALE, LIP_UPPER_OUTER)
    values["au_lip_pucker"] = outer_lip_mid[2] - corners_mid[2]
    values.update(zip(LANDMARK_COLUMNS, q_array[list(LANDMARK_SUBSET), :2].ravel().tolist()))
    return values


class _Solution(SolutionBase):
    """SolutionBase with two changes to the graph a MediaPipe solution builds: ``threads`` executor
    threads (MediaPipe's default is one per core, in every job) and ``_extra_outputs`` observed."""

    _threads = 1
    _extra_outputs: list[str] = []

    def __init__(self, *, binary_graph_path: str, outputs: list[str], **kwargs: Any) -> None:
        config = calculator_pb2.CalculatorGraphConfig()
        config.ParseFromString((Path(mp.__file__).parent.parent / binary_graph_path).read_bytes())
        # The default executor, explicitly: a plain num_threads is lost when MediaPipe validates the graph.
        executor = config.executor.add(type="ThreadPoolExecutor")
        executor.options.Extensions[ThreadPoolExecutorOptions.ext].num_threads = self._threads
        super().__init__(graph_config=config, outputs=[*outputs, *self._extra_outputs], **kwargs)


class _FaceMesh(face_mesh.FaceMesh, _Solution):
    """mediapipe's FaceMesh (its own arguments, so its own graph and options) whose ``process`` also
    returns ``face_detections``: the detections of the frames where Face Mesh ran its detector, None
    on frames it tracked from the previous frame's landmarks."""

    _extra_outputs = ["face_detections"]

    def __init__(self, threads: int) -> None:
        self._threads = threads
        super().__init__(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                         min_detection_confidence=0.5, min_tracking_confidence=0.5)


class MediaPipeExtractor:
    name = "mediapipe"
    columns = COLUMNS

    def __init__(self, fps: float, max_frames: int, require_face: bool, threads: int | None = None) -> None:
        self.fps, self.max_frames, self.require_face = fps, max_frames, require_face
        self.threads = job_threads() if threads is None else threads
        cv2.setNumThreads(self.threads)  # imported by mediapipe; its pool would otherwise take every core
        self._mesh = _FaceMesh(self.threads)
        self.detector_runs = 0  # on the last clip: frames where Face Mesh ran its face detector
        self.decode_stats = DecodeStats()  # of the last clip

    def extract(self, clip: Clip) -> np.ndarray:
        self.decode_stats = DecodeStats()
        frames = _sample_frames(clip, self.fps, self.max_frames, self.threads, self.decode_stats)
        self._mesh.reset()  # a new clip starts with detection, not with the last clip's face
        self.detector_runs = 0
        track_score: float | None = None
        had_face = False
        rows = np.zeros((len(frames), len(COLUMNS)), dtype=np.float32)
        for t, frame in enumerate(frames):
            result = self._mesh.process(frame)
            # Face Mesh detects on a clip's first frame and after a frame without a face (its graph's
            # gate); face_detections is None when it tracked, and also when it detected nothing.
            if result.face_detections is not None or not had_face:
                self.detector_runs += 1
                # max_num_faces=1: at most one detection, the face whose landmarks follow
                track_score = float(result.face_detections[0].score[0]) if result.face_detections else None
            had_face = bool(result.multi_face_landmarks)
            if not had_face:
                continue
            if track_score is None:
                raise RuntimeError("visual: Face Mesh gave landmarks with no detection before them in the clip")
            h, w = frame.shape[:2]
            values = face_features(mesh_points(result.multi_face_landmarks[0], w, h))
            values["face_present"] = 1.0
            values["track_confidence"] = track_score
            rows[t] = [values[c] for c in COLUMNS]
        if self.require_face and not rows[:, 0].any():
            raise ClipError(NO_FACE, kind=SkipKind.NO_FACE)
        return rows


# ----------------------------------------------------------------------------------------------
# openface_csv

OPENFACE_LEADING = ["frame", "face_id", "timestamp", "confidence", "success"]
_AU_INTENSITY = [f"{au:02d}" for au in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)]
_AU_PRESENCE = sorted([*_AU_INTENSITY, "28"])  # AU28 (lip suck) has a classifier but no regressor


def _numbered(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


# FeatureExtraction's column order (OpenFace 2 RecorderCSV): gaze with 56 eye landmarks 2-D and
# 3-D, pose, 68 landmarks 2-D then 3-D, PDM rigid + 34 non-rigid parameters, AU intensities then
# presences (each in sorted AU order).
OPENFACE_COLUMNS = [
    "gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z", "gaze_angle_x", "gaze_angle_y",
    *(name for axis in ("x", "y", "X", "Y", "Z") for name in _numbered(f"eye_lmk_{axis}_", 56)),
    "pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz",
    *(name for axis in ("x", "y", "X", "Y", "Z") for name in _numbered(f"{axis}_", 68)),
    "p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty", *_numbered("p_", 34),
    *(f"AU{au}_r" for au in _AU_INTENSITY),
    *(f"AU{au}_c" for au in _AU_PRESENCE),
]
assert len(OPENFACE_COLUMNS) == 709


class OpenFaceCsvExtractor:
    """Rows of an OpenFace 2 CSV as read: the first ``max_frames`` rows of the face, no resampling.

    This is the reference's behaviour (T_v = 55 frames at the video's own frame rate), so ``fps``
    does not apply. The CSV is ``<openface_dir>/<clip_id>.csv``, or ``clip.video`` itself when that
    ends in ``.csv``. With several face_ids the one with most successful frames is kept (ties: the
    lowest id). Rows where OpenFace failed (success 0) are kept as OpenFace wrote them.
    """

    name = "openface_csv"
    columns = OPENFACE_COLUMNS

    def __init__(self, max_frames: int, require_face: bool, openface_dir: str | None) -> None:
        self.max_frames, self.require_face = max_frames, require_face
        self.openface_dir = Path(openface_dir) if openface_dir else None

    def csv_path(self, clip: Clip) -> Path:
        if clip.video and clip.video.lower().endswith(".csv"):
            return Path(clip.video)
        if self.openface_dir is None:
            raise ClipError("visual: openface_csv needs visual.openface_dir or a .csv video path",
                            kind=SkipKind.BAD_OPENFACE_CSV)
        return self.openface_dir / f"{clip.clip_id}.csv"

    def extract(self, clip: Clip) -> np.ndarray:
        path = self.csv_path(clip)
        if not path.is_file():
            raise ClipError(f"visual: OpenFace CSV not found: {path}", kind=SkipKind.BAD_OPENFACE_CSV)
        try:
            # OpenFace writes ", " between fields; skipinitialspace strips it from names and values.
            table = pd.read_csv(path, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ClipError(f"visual: unreadable OpenFace CSV ({type(exc).__name__}: {exc})",
                            kind=SkipKind.BAD_OPENFACE_CSV) from exc
        header = [str(c).strip() for c in table.columns]
        if header[:5] != OPENFACE_LEADING:
            raise ClipError(f"visual: OpenFace CSV must start with {OPENFACE_LEADING}, got {header[:5]}",
                            kind=SkipKind.BAD_OPENFACE_CSV)
        features = header[5:]
        if len(features) != len(OPENFACE_COLUMNS):
            raise ClipError(f"visual: OpenFace CSV has {len(features)} feature columns, expected 709",
                            kind=SkipKind.BAD_OPENFACE_CSV)
        if features != OPENFACE_COLUMNS:
            first = next(i for i, (a, b) in enumerate(zip(features, OPENFACE_COLUMNS)) if a != b)
            raise ClipError(f"visual: OpenFace CSV column {first + 5} is {features[first]!r}, "
                            f"expected {OPENFACE_COLUMNS[first]!r}", kind=SkipKind.BAD_OPENFACE_CSV)
        table.columns = header
        if table.empty:
            raise ClipError("visual: OpenFace CSV has no rows", kind=SkipKind.BAD_OPENFACE_CSV)
        successes = table.groupby("face_id")["success"].sum()
        face = successes.index[np.argmax(successes.to_numpy())]  # argmax: the first (lowest id) on ties
        rows = table[table["face_id"] == face].head(self.max_frames)
        if self.require_face and not (rows["success"] > 0).any():
            raise ClipError(NO_FACE, kind=SkipKind.NO_FACE)
        try:
            return rows[OPENFACE_COLUMNS].to_numpy(dtype=np.float32)
        except ValueError as exc:
            raise ClipError(f"visual: non-numeric value in OpenFace CSV ({exc})", kind=SkipKind.BAD_OPENFACE_CSV) from exc


# ----------------------------------------------------------------------------------------------
# pyfeat

PYFEAT_MISSING = "pyfeat backend needs `pip install kebr[pyfeat]` and its model weights"


class PyFeatExtractor:
    """py-feat's Detector (its 0.6 API) on the sampled frames: face score, head pose, AUs, emotions.

    Columns: face_present, confidence (py-feat's FaceScore), then the detector's own pose
    (Pitch, Roll, Yaw in degrees), AU and emotion column names. Several faces in a frame: the one
    with the highest FaceScore. A frame without a face is a face_present 0 row of zeros.
    """

    name = "pyfeat"

    def __init__(self, fps: float, max_frames: int, require_face: bool) -> None:
        self.fps, self.max_frames, self.require_face = fps, max_frames, require_face
        try:
            from feat import Detector
        except ImportError as exc:
            raise RuntimeError(PYFEAT_MISSING) from exc
        try:
            # Detector() fetches its weights from the py-feat hub when they are not cached yet.
            self._detector = Detector(device="auto")
        except Exception as exc:
            raise RuntimeError(f"{PYFEAT_MISSING} ({type(exc).__name__}: {exc})") from exc
        info = self._detector.info
        self._values = [*info["facepose_model_columns"], *info["au_presence_columns"],
                        *info["emotion_model_columns"]]
        self.columns = ["face_present", "confidence", *self._values]

    def extract(self, clip: Clip) -> np.ndarray:
        from PIL import Image

        frames = _sample_frames(clip, self.fps, self.max_frames)
        with tempfile.TemporaryDirectory() as tmp:
            # detect_image reads files; frame index i is Fex's "frame" value i with batch_size 1.
            paths = []
            for i, frame in enumerate(frames):
                paths.append(str(Path(tmp) / f"{i:05d}.png"))
                Image.fromarray(frame).save(paths[-1])
            fex = self._detector.detect_image(paths, batch_size=1)
        rows = np.zeros((len(frames), len(self.columns)), dtype=np.float32)
        found = fex.dropna(subset=["FaceScore"])
        for frame_index, faces in found.groupby("frame"):
            best = faces.loc[faces["FaceScore"].idxmax()]
            rows[int(frame_index)] = [1.0, best["FaceScore"], *best[self._values].to_numpy(dtype=np.float64)]
        if self.require_face and not rows[:, 0].any():
            raise ClipError(NO_FACE, kind=SkipKind.NO_FACE)
        return rows
