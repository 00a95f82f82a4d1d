"""Per-coefficient landmark displacement basis: what each blendshape does to the mesh.

Each expression channel of :mod:`dystream.motion` gets a field of 2D displacements
of the 468 mesh points (iris points excluded), in crop units, for amplitude 1 — a
strong but natural version of that expression on this face. It is built from the
photo's own landmarks (face height, eye line, lip contours), so it fits any face.
How far a coefficient value moves along its field is set by calibration
(:mod:`dystream.autoencoder.mesh.calibration`), because MediaPipe's scores have
their own scale.
"""

from __future__ import annotations

import numpy as np

from dystream.autoencoder.mesh import topology as tp
from dystream.motion import EXPRESSION_NAMES


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


class FaceFrame:
    """The face's own axes in the image: u along the eye line (to the image right), v down the face."""

    def __init__(self, landmarks: np.ndarray):
        pts = landmarks[:, :2].astype(np.float64)
        right_eye = pts[list(tp.RIGHT_EYE_CORNERS)].mean(axis=0)
        left_eye = pts[list(tp.LEFT_EYE_CORNERS)].mean(axis=0)
        axis = left_eye - right_eye
        self.e_u = axis / np.linalg.norm(axis)
        self.e_v = np.array([-self.e_u[1], self.e_u[0]])
        self.height = float(np.linalg.norm(pts[tp.FOREHEAD] - pts[tp.CHIN]))
        self.mouth_centre = pts[[13, 14]].mean(axis=0)
        self.points = pts
        rel = pts - self.mouth_centre
        # Face coordinates relative to the mouth centre, in face heights.
        self.u = rel @ self.e_u / self.height
        self.v = rel @ self.e_v / self.height

    def to_image(self, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
        """Displacements given in face heights along (u, v) -> crop units along (x, y)."""
        return (du[:, None] * self.e_u + dv[:, None] * self.e_v) * self.height


def _index_mask(indices, n=tp.NUM_LANDMARKS) -> np.ndarray:
    mask = np.zeros(n)
    mask[list(indices)] = 1.0
    return mask


def _pull_towards(frame: FaceFrame, moving, targets, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Move each landmark of ``moving`` a fraction of the way to its partner in ``targets``."""
    du = np.zeros(tp.NUM_LANDMARKS)
    dv = np.zeros(tp.NUM_LANDMARKS)
    for a, b in zip(moving, targets):
        du[a] += fraction * (frame.u[b] - frame.u[a])
        dv[a] += fraction * (frame.v[b] - frame.v[a])
    return du, dv


def build_basis(landmarks: np.ndarray) -> np.ndarray:
    """[NUM_EXPRESSION, 468, 2] displacement fields in crop units for amplitude 1."""
    f = FaceFrame(landmarks)
    n = tp.NUM_LANDMARKS
    u, v = f.u, f.v
    upper_lip = _index_mask(tp.UPPER_LIP)
    lower_lip = _index_mask(tp.LOWER_LIP)
    lips = _index_mask(tp.ALL_LIPS)
    corner_u = abs(u[tp.MOUTH_CORNER_LEFT] - u[tp.MOUTH_CORNER_RIGHT]) / 2  # half mouth width
    # Lower face that rides on the jaw: below the mouth-corner line, fading towards the
    # jaw angles so the face outline bends instead of shearing.
    lateral = 1 - _smoothstep((np.abs(u) - 0.30) / 0.30)
    below = _smoothstep(v / 0.10)
    jaw = np.where(upper_lip > 0, 0.0, np.maximum(below * lateral, 0.75 * lower_lip))
    jaw[[tp.MOUTH_CORNER_LEFT, tp.MOUTH_CORNER_RIGHT, 78, 308]] = 0.35
    # Soft neighbourhood of the lips (cheek skin follows the lips a little).
    near_mouth = np.exp(-((u / (corner_u + 0.12)) ** 2 + (v / 0.16) ** 2))
    near_mouth = np.maximum(near_mouth * 0.5, lips)
    zeros = np.zeros(n)

    def side_weight(sign: float, width: float = 0.06) -> np.ndarray:
        """~1 on one side of the mouth (sign +1: subject's left = image right), 0 on the other."""
        return 1 / (1 + np.exp(-sign * u / width))

    def corner_region(sign: float, sigma: float = 0.10) -> np.ndarray:
        idx = tp.MOUTH_CORNER_LEFT if sign > 0 else tp.MOUTH_CORNER_RIGHT
        d2 = (u - u[idx]) ** 2 + (v - v[idx]) ** 2
        return np.exp(-d2 / (2 * sigma**2))

    fields: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    fields["jawOpen"] = (zeros, 0.16 * jaw)
    fields["mouthClose"] = (zeros, -0.05 * lower_lip)
    inward = -u * near_mouth
    fields["mouthPucker"] = (0.45 * inward, -0.01 * lower_lip + 0.01 * upper_lip)
    fields["mouthFunnel"] = (0.30 * inward, 0.035 * lower_lip - 0.025 * upper_lip)
    for name, sign in (("Left", 1.0), ("Right", -1.0)):
        region = corner_region(sign)
        fields[f"mouthSmile{name}"] = (sign * 0.06 * region, -0.05 * region)
        fields[f"mouthStretch{name}"] = (sign * 0.07 * region, 0.03 * region)
        side = side_weight(sign)
        du, dv = _pull_towards(f, tp.LOWER_LIP_OUTER[1:-1], tp.LOWER_LIP_INNER[1:-1], 0.6)
        du2, dv2 = _pull_towards(f, tp.UPPER_LIP_OUTER[1:-1], tp.UPPER_LIP_INNER[1:-1], 0.6)
        press_u = (du + du2) * side + sign * 0.015 * corner_region(sign)
        press_v = (dv + dv2) * side
        fields[f"mouthPress{name}"] = (press_u, press_v)
        fields[f"mouthLowerDown{name}"] = (zeros, 0.05 * lower_lip * side)
        fields[f"mouthUpperUp{name}"] = (zeros, -0.045 * upper_lip * side)
    du, dv = _pull_towards(f, tp.LOWER_LIP_OUTER[1:-1], tp.LOWER_LIP_INNER[1:-1], 0.8)
    fields["mouthRollLower"] = (du, dv - 0.01 * _index_mask(tp.LOWER_LIP_INNER[1:-1]))
    du, dv = _pull_towards(f, tp.UPPER_LIP_OUTER[1:-1], tp.UPPER_LIP_INNER[1:-1], 0.8)
    fields["mouthRollUpper"] = (du, dv + 0.01 * _index_mask(tp.UPPER_LIP_INNER[1:-1]))
    for name, upper, lower, fold in (
        ("Left", tp.LEFT_UPPER_LID, tp.LEFT_LOWER_LID, tp.LEFT_LID_FOLD),
        ("Right", tp.RIGHT_UPPER_LID, tp.RIGHT_LOWER_LID, tp.RIGHT_LID_FOLD),
    ):
        # The upper lid travels most of the way, the lower lid rises to meet it.
        du1, dv1 = _pull_towards(f, upper, lower, 0.85)
        du2, dv2 = _pull_towards(f, lower, upper, 0.15)
        _, dv3 = _pull_towards(f, fold, upper, 0.0)
        fold_drop = zeros.copy()
        fold_drop[list(fold)] = 0.5 * np.mean(dv1[list(upper)])
        fields[f"eyeBlink{name}"] = (du1 + du2, dv1 + dv2 + dv3 + fold_drop)
    brow_inner = _index_mask(tp.RIGHT_BROW_INNER + tp.LEFT_BROW_INNER)
    forehead_above = lambda idx: np.exp(-((u - u[list(idx)].mean()) ** 2 / 0.02 + (v - v[list(idx)].mean()) ** 2 / 0.02))  # noqa: E731
    fields["browInnerUp"] = (zeros, -0.05 * np.maximum(brow_inner, 0.5 * (
        forehead_above(tp.RIGHT_BROW_INNER) + forehead_above(tp.LEFT_BROW_INNER)) * (v < v[list(tp.RIGHT_BROW_INNER)].max())))
    for name, sign, inner, outer in (
        ("Left", 1.0, tp.LEFT_BROW_INNER, tp.LEFT_BROW_OUTER),
        ("Right", -1.0, tp.RIGHT_BROW_INNER, tp.RIGHT_BROW_OUTER),
    ):
        brow = _index_mask(inner + outer)
        inner_mask = _index_mask(inner)
        outer_mask = _index_mask(outer)
        fields[f"browDown{name}"] = (-sign * 0.015 * inner_mask, 0.035 * brow + 0.01 * inner_mask)
        fields[f"browOuterUp{name}"] = (zeros, -0.05 * outer_mask - 0.015 * inner_mask)
    basis = np.zeros((len(EXPRESSION_NAMES), tp.NUM_MESH_POINTS, 2), np.float32)
    for k, name in enumerate(EXPRESSION_NAMES):
        du, dv = fields[name]
        basis[k] = f.to_image(np.asarray(du), np.asarray(dv))[: tp.NUM_MESH_POINTS]
    return basis
