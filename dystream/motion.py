"""The motion space: identity-agnostic, explicit, named.

A motion frame is a vector of ``MOTION_DIM`` floats:

* expression — ARKit-named blendshape coefficients in [0, 1], on the scale that
  MediaPipe's face landmarker reads off real faces (so that motion read from
  real video and motion made by the synthetic engine share one distribution);
* head pose — pitch, yaw, roll in radians (positive pitch = chin down, positive
  yaw = face turns to the image's right, positive roll = head tilts clockwise in
  the image), translation of the face centre as a fraction of the face crop (x to
  the right, y down), and the log of the face scale relative to the crop.

Pose is absolute: what the encoder reads off a face, not relative to anything.
Every module (data engine, autoencoders, generator, export) uses the names and
indices defined here and nowhere else.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dystream.config import FRAMES_PER_SECOND


@dataclass(frozen=True)
class Channel:
    """One motion channel and the range of values it takes in practice.

    ``rest`` is what the encoder reads on a relaxed face; ``typical_max`` is the
    value it rarely exceeds in conversation (e.g. jawOpen ~0.6 in speech);
    ``lower``/``upper`` are hard bounds (clamped on save, documented limits of the
    decoder for pose).
    """

    name: str
    lower: float
    upper: float
    rest: float = 0.0
    typical_max: float = 1.0


_EXPR = [
    # name                 rest   typical max (MediaPipe's own scale, in speech)
    ("jawOpen",            0.02,  0.60),
    ("mouthClose",         0.00,  0.35),
    ("mouthFunnel",        0.00,  0.50),
    ("mouthPucker",        0.02,  0.80),
    ("mouthSmileLeft",     0.02,  0.70),
    ("mouthSmileRight",    0.02,  0.70),
    ("mouthStretchLeft",   0.01,  0.40),
    ("mouthStretchRight",  0.01,  0.40),
    ("mouthRollLower",     0.01,  0.60),
    ("mouthRollUpper",     0.01,  0.40),
    ("mouthPressLeft",     0.02,  0.50),
    ("mouthPressRight",    0.02,  0.50),
    ("mouthLowerDownLeft", 0.01,  0.50),
    ("mouthLowerDownRight", 0.01, 0.50),
    ("mouthUpperUpLeft",   0.01,  0.50),
    ("mouthUpperUpRight",  0.01,  0.50),
    ("eyeBlinkLeft",       0.08,  0.85),
    ("eyeBlinkRight",      0.08,  0.85),
    ("browInnerUp",        0.03,  0.60),
    ("browDownLeft",       0.02,  0.50),
    ("browDownRight",      0.02,  0.50),
    ("browOuterUpLeft",    0.02,  0.60),
    ("browOuterUpRight",   0.02,  0.60),
]

EXPRESSION_CHANNELS: tuple[Channel, ...] = tuple(
    Channel(name, 0.0, 1.0, rest, tmax) for name, rest, tmax in _EXPR
)

# Supported pose range of the mesh autoencoder (documented in its decoder):
# yaw +/-20 deg, pitch +/-15 deg, roll +/-15 deg. Hard bounds are a little wider.
POSE_LIMIT_DEGREES = {"pitch": 15.0, "yaw": 20.0, "roll": 15.0}
POSE_CHANNELS: tuple[Channel, ...] = (
    Channel("pitch", math.radians(-25), math.radians(25), 0.0, math.radians(15)),
    Channel("yaw", math.radians(-30), math.radians(30), 0.0, math.radians(20)),
    Channel("roll", math.radians(-25), math.radians(25), 0.0, math.radians(15)),
    Channel("tx", -0.25, 0.25, 0.0, 0.08),
    Channel("ty", -0.25, 0.25, 0.0, 0.08),
    Channel("log_scale", -0.4, 0.4, 0.0, 0.10),
)

CHANNELS: tuple[Channel, ...] = EXPRESSION_CHANNELS + POSE_CHANNELS
NAMES: tuple[str, ...] = tuple(c.name for c in CHANNELS)
EXPRESSION_NAMES: tuple[str, ...] = tuple(c.name for c in EXPRESSION_CHANNELS)
POSE_NAMES: tuple[str, ...] = tuple(c.name for c in POSE_CHANNELS)
MOTION_DIM: int = len(CHANNELS)
NUM_EXPRESSION: int = len(EXPRESSION_CHANNELS)
INDEX: dict[str, int] = {name: i for i, name in enumerate(NAMES)}
EXPRESSION_SLICE = slice(0, NUM_EXPRESSION)
POSE_SLICE = slice(NUM_EXPRESSION, MOTION_DIM)
ROTATION_SLICE = slice(INDEX["pitch"], INDEX["roll"] + 1)

LOWER = np.array([c.lower for c in CHANNELS], dtype=np.float32)
UPPER = np.array([c.upper for c in CHANNELS], dtype=np.float32)
REST = np.array([c.rest for c in CHANNELS], dtype=np.float32)
TYPICAL_MAX = np.array([c.typical_max for c in CHANNELS], dtype=np.float32)


def idx(name: str) -> int:
    """Index of a channel by its name, with a clear error for a typo."""
    try:
        return INDEX[name]
    except KeyError:
        raise KeyError(f"unknown motion channel {name!r}; known: {', '.join(NAMES)}") from None


def neutral_frame() -> np.ndarray:
    """A relaxed, frontal face: every coefficient at rest, pose zero."""
    return REST.copy()


def clamp(motion: np.ndarray) -> np.ndarray:
    """Clip motion to the hard bounds of every channel (any leading shape)."""
    return np.clip(motion, LOWER, UPPER)


@dataclass
class MotionSequence:
    """A motion sequence: ``values`` [T, MOTION_DIM] at ``fps`` frames per second."""

    values: np.ndarray
    fps: int = FRAMES_PER_SECOND
    names: tuple[str, ...] = field(default=NAMES)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim == 1:
            self.values = self.values[None]
        if self.values.ndim != 2 or self.values.shape[1] != len(self.names):
            raise ValueError(
                f"motion must be [frames, {len(self.names)}], got {tuple(self.values.shape)}"
            )
        if not np.all(np.isfinite(self.values)):
            raise ValueError("motion contains NaN or infinite values")

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def channel(self, name: str) -> np.ndarray:
        return self.values[:, list(self.names).index(name)]

    # -- persistence -------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write npz (values, names, fps), or JSON/CSV by the file's extension."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            return self.to_json(path)
        if suffix == ".csv":
            return self.to_csv(path)
        if suffix != ".npz":
            raise ValueError(f"unknown motion format {suffix!r}: use .npz, .json or .csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, values=self.values, names=np.array(self.names), fps=np.int32(self.fps))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MotionSequence":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"motion file not found: {path}")
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            names = tuple(data["names"])
            values = np.array([[f["values"][n] for n in names] for f in data["frames"]], np.float32)
            return cls(values.reshape(-1, len(names)), int(data["fps"]), names).to_layout()
        with np.load(path, allow_pickle=False) as z:
            if "values" not in z or "names" not in z:
                raise ValueError(f"{path} is not a dystream motion file (needs 'values' and 'names')")
            return cls(z["values"], int(z["fps"]), tuple(str(n) for n in z["names"])).to_layout()

    def to_layout(self) -> "MotionSequence":
        """Reorder channels into this version's layout; missing channels take rest values."""
        if tuple(self.names) == NAMES:
            return self
        out = np.tile(REST, (len(self), 1))
        for j, name in enumerate(self.names):
            if name in INDEX:
                out[:, INDEX[name]] = self.values[:, j]
        return MotionSequence(out, self.fps, NAMES)

    def to_json(self, path: str | Path) -> Path:
        """ARKit-named JSON: per frame, blendshapes and head pose in degrees."""
        path = Path(path)
        frames = []
        for t, row in enumerate(self.values):
            named = {n: float(v) for n, v in zip(self.names, row)}
            frames.append({
                "time": t / self.fps,
                "blendshapes": {n: named[n] for n in EXPRESSION_NAMES if n in named},
                "headRotationDegrees": {
                    k: math.degrees(named[k]) for k in ("pitch", "yaw", "roll") if k in named
                },
                "values": named,
            })
        doc = {"format": "dystream-motion", "fps": self.fps, "names": list(self.names),
               "frames": frames}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))
        return path

    def to_csv(self, path: str | Path) -> Path:
        """One row per frame: time in seconds, then every channel by its ARKit name."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["time", *self.names])
            for t, row in enumerate(self.values):
                writer.writerow([f"{t / self.fps:.4f}", *(f"{v:.5f}" for v in row)])
        return path
