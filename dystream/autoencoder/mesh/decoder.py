"""The mesh decoder: (appearance, motion) -> frames, by warping the photo.

Per frame: expression coefficients -> landmark displacements (calibrated basis),
head pose relative to the photo's own -> 3D rotation, translation and scale of the
landmarks, then the thin-plate-spline warp of the crop, the mouth interior, and
optionally the paste-back into the full photo. All in torch, batched over frames;
device and dtype follow the appearance.

Supported pose range (relative to a frontal photo): yaw +/-20 deg, pitch +/-15 deg,
roll +/-15 deg, translation +/-0.08 of the crop, log scale +/-0.1. Beyond it the
warp stretches hair and cheeks visibly (it has no hidden side of the head to show).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dystream.autoencoder.mesh import topology as tp
from dystream.autoencoder.mesh.crop import CropBox, PasteBack
from dystream.autoencoder.mesh.eyelid import composite_lid
from dystream.autoencoder.mesh.mouth import composite_mouth
from dystream.autoencoder.mesh.pose import rotation_matrix
from dystream.autoencoder.mesh.warp import COARSE_GRID, backward_map
from dystream.errors import InputError
from dystream.motion import EXPRESSION_NAMES, INDEX, MOTION_DIM, NUM_EXPRESSION, TYPICAL_MAX

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
# The warp cannot show occlusion: near the silhouette a turned face folds the mesh.
# Flattening the depth (factor < 1) was tried and did not remove the fold; kept at 1.
DEPTH_FLATTEN = 1.0
PIVOT_DEPTH = 0.0   # rotate about the mesh centroid, so rotation leaves the read-back tx, ty alone


def default_gains() -> np.ndarray:
    """Uncalibrated gains: a coefficient at its typical maximum gives amplitude 1; pose as is."""
    gains = np.ones(MOTION_DIM)
    gains[:NUM_EXPRESSION] = 1.0 / TYPICAL_MAX[:NUM_EXPRESSION]
    return gains.astype(np.float32)


def load_gains(path: Path = CALIBRATION_FILE) -> np.ndarray:
    """Per-channel gains [MOTION_DIM] calibrated against the encoder's read-back
    (expression: basis amplitude per unit of coefficient; pose angles: rendered angle
    per read angle, as a 2D warp of a 3D turn reads a little smaller)."""
    gains = default_gains()
    if path.exists():
        table = json.loads(path.read_text())["gains"]
        for name, value in table.items():
            if name in INDEX:
                gains[INDEX[name]] = value
    return gains


def load_coupling(path: Path = CALIBRATION_FILE) -> np.ndarray:
    """[NUM_EXPRESSION, NUM_EXPRESSION] cross-talk compensation C: channel i is rendered
    with delta_i + sum_j C[i, j] delta_j. MediaPipe reads channels together, not one by
    one (on an opening jaw it reads less upper-lip raise; rounded lips read as less
    smile), so C, fitted by least squares on mixed motions, pre-compensates what the
    read-back would lose. Zero when the file has none."""
    coupling = np.zeros((NUM_EXPRESSION, NUM_EXPRESSION), np.float32)
    if path.exists():
        table = json.loads(path.read_text()).get("coupling", {})
        for target, sources in table.items():
            for source, value in sources.items():
                if target in INDEX and source in INDEX:
                    coupling[INDEX[target], INDEX[source]] = value
    return coupling


@dataclass
class MeshAppearance:
    """Everything the decoder needs about one photo, precomputed once by the encoder."""

    image: torch.Tensor            # [3, S, S] float 0..255, the face crop at the output size
    landmarks: torch.Tensor        # [478, 3] crop units (x, y in [0, 1]; z alike)
    m0: np.ndarray                 # [MOTION_DIM] the photo's own motion
    basis: torch.Tensor            # [NUM_EXPRESSION, 468, 2] crop units per unit amplitude
    expression_fields: torch.Tensor  # [NUM_EXPRESSION, G*G, 2] spline of each basis field
    coordinate_fields: torch.Tensor  # [G*G, 3] spline of the landmarks' offsets from the centre
    constant_field: torch.Tensor   # [G*G] spline of a unit shift of every landmark
    centre: torch.Tensor           # [3] rotation and scale centre (mesh centroid), crop units
    rest_opening: torch.Tensor     # [K] gap between paired inner lip points, output pixels
    mouth_window: tuple[int, int, int, int]
    brightness: torch.Tensor       # scalar, skin light relative to a mid-tone face
    eyes: list[tuple[tuple[int, ...], tuple[int, ...], torch.Tensor, tuple[int, int, int, int], torch.Tensor]]
    # per eye: upper and lower lid landmark indices (corner to corner), the photo's
    # opening in output pixels, a window around the eye, and the lid skin colour
    box: CropBox                   # where the crop sits in the photo
    photo: np.ndarray | None = None
    paste: PasteBack | None = None

    @property
    def resolution(self) -> int:
        return int(self.image.shape[-1])

    def to(self, device) -> "MeshAppearance":
        for name in ("image", "landmarks", "basis", "expression_fields", "coordinate_fields",
                     "constant_field", "centre", "rest_opening", "brightness"):
            setattr(self, name, getattr(self, name).to(device))
        self.eyes = [(u, lo, rest.to(device), w, skin.to(device)) for u, lo, rest, w, skin in self.eyes]
        if self.paste is not None:
            self.paste.to(device)
        return self

    def state_dict(self) -> dict:
        """Plain tensors, numbers and tuples only, so that ``torch.load(weights_only=True)``
        reads it back on a machine without the face engine (e.g. a GPU benchmark box)."""
        tensors = {name: getattr(self, name).detach().cpu() for name in _TENSOR_FIELDS}
        return {
            "format": APPEARANCE_FORMAT,
            **tensors,
            "m0": torch.from_numpy(np.asarray(self.m0, np.float32)),
            "mouth_window": tuple(int(x) for x in self.mouth_window),
            "eyes": [(tuple(int(i) for i in u), tuple(int(i) for i in lo), rest.detach().cpu(),
                      tuple(int(x) for x in w), skin.detach().cpu()) for u, lo, rest, w, skin in self.eyes],
            "box": (float(self.box.x0), float(self.box.y0), float(self.box.side)),
            "photo": None if self.photo is None else torch.from_numpy(np.ascontiguousarray(self.photo)),
        }

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> "MeshAppearance":
        """Inverse of :meth:`state_dict`; the paste-back is rebuilt from the stored photo."""
        if not isinstance(state, dict) or state.get("format") != APPEARANCE_FORMAT:
            raise InputError("not a saved mesh appearance (expected a file written by "
                             "MeshAppearance.state_dict, e.g. bench_decoder.py --save-appearance)")
        kw = {"device": device, "dtype": dtype}
        photo = None if state["photo"] is None else state["photo"].numpy()
        box = CropBox(*state["box"])
        return cls(
            **{name: state[name].to(**kw) for name in _TENSOR_FIELDS},
            m0=state["m0"].numpy().copy(),
            mouth_window=tuple(state["mouth_window"]),
            eyes=[(tuple(u), tuple(lo), rest.to(**kw), tuple(w), skin.to(**kw))
                  for u, lo, rest, w, skin in state["eyes"]],
            box=box,
            photo=photo,
            paste=None if photo is None else PasteBack(photo, box).to(device),
        )


APPEARANCE_FORMAT = "dystream.mesh_appearance.v1"
_TENSOR_FIELDS = ("image", "landmarks", "basis", "expression_fields", "coordinate_fields", "constant_field",
                  "centre", "rest_opening", "brightness")


def pose_terms(app: MeshAppearance, motion: torch.Tensor, gains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame, the 2x3 map A (rotation relative to the photo's, times scale; image rows
    x, y) and the translation t [T, 2], both in crop units, that move a point p to
    centre + A (p - centre) + t."""
    dev, dt = app.landmarks.device, app.landmarks.dtype
    m0 = torch.as_tensor(app.m0, device=dev, dtype=dt)
    delta = motion - m0
    p, y, r = (INDEX["pitch"], INDEX["yaw"], INDEX["roll"])
    angles = m0[p:r + 1] + delta[:, p:r + 1] * gains.to(dev, dt)[p:r + 1]
    rot = rotation_matrix(angles[:, 0], angles[:, 1], angles[:, 2]) @ \
        rotation_matrix(m0[p], m0[y], m0[r]).transpose(-1, -2)
    scale = torch.exp(delta[:, INDEX["log_scale"]])[:, None, None]
    shift = torch.stack([delta[:, INDEX["tx"]], delta[:, INDEX["ty"]]], -1)
    linear = rot[:, :2, :] * scale
    return torch.cat([linear[..., :2], linear[..., 2:] * DEPTH_FLATTEN], -1), shift


def expression_amplitudes(app: MeshAppearance, motion: torch.Tensor, gains: torch.Tensor,
                          coupling: torch.Tensor | None = None) -> torch.Tensor:
    m0 = torch.as_tensor(app.m0[:NUM_EXPRESSION], device=motion.device, dtype=motion.dtype)
    delta = motion[:, :NUM_EXPRESSION] - m0
    if coupling is not None:
        delta = delta + delta @ coupling.to(motion.device, motion.dtype).T
    amplitude = delta * gains[:NUM_EXPRESSION].to(motion.device, motion.dtype)
    # Lids meet at amplitude 1; past it they would pass through each other. The gain
    # may close the eye before the coefficient's maximum (MediaPipe reads a closed
    # warped eye at about half), so the amplitude stops there.
    return torch.cat([amplitude[:, :_BLINK_FIRST], amplitude[:, _BLINK_FIRST:_BLINK_FIRST + 2].clamp(max=1.0),
                      amplitude[:, _BLINK_FIRST + 2:]], -1)


_BLINK_FIRST = INDEX["eyeBlinkLeft"]
assert INDEX["eyeBlinkRight"] == _BLINK_FIRST + 1


def _place(app: MeshAppearance, indices: list[int], amplitude: torch.Tensor, linear: torch.Tensor,
           shift: torch.Tensor) -> torch.Tensor:
    rest = app.landmarks[indices]                                       # [N, 3]
    moved = torch.einsum("tk,knc->tnc", amplitude, app.basis[:, indices])
    relative = rest - app.centre
    xy = (relative[None, :, :2] + moved) @ linear[:, :, :2].transpose(-1, -2) \
        + relative[None, :, 2:] * linear[:, None, :, 2]
    return app.centre[:2] + xy + shift[:, None]


def warped_landmarks(app: MeshAppearance, motion: torch.Tensor, gains: torch.Tensor,
                     indices: list[int] | tuple[int, ...] | None = None,
                     coupling: torch.Tensor | None = None) -> torch.Tensor:
    """[T, N, 2] positions (crop units) of the mesh points ``indices`` (default all 468)."""
    motion = motion.to(app.landmarks.device, app.landmarks.dtype)
    indices = list(range(tp.NUM_MESH_POINTS)) if indices is None else list(indices)
    amplitude = expression_amplitudes(app, motion, gains, coupling)
    linear, shift = pose_terms(app, motion, gains)
    return _place(app, indices, amplitude, linear, shift)


class MeshDecoder:
    """Renders motion on photos. Gains and cross-talk coupling come from the calibration file."""

    def __init__(self, gains: np.ndarray | None = None, coupling: np.ndarray | None = None):
        self.gains = torch.as_tensor(load_gains() if gains is None else gains, dtype=torch.float32)
        self.coupling = torch.as_tensor(load_coupling() if coupling is None else coupling, dtype=torch.float32)

    def render(self, app: MeshAppearance, motion: torch.Tensor, paste_back: bool = False) -> torch.Tensor:
        """motion [T, MOTION_DIM] -> frames [T, 3, S, S] (or [T, 3, H, W] pasted) float 0..255."""
        if motion.ndim != 2 or motion.shape[-1] != MOTION_DIM:
            raise InputError(f"motion must be [frames, {MOTION_DIM}], got {tuple(motion.shape)}")
        size = app.resolution
        frames = motion.shape[0]
        motion = motion.to(app.landmarks.device, app.landmarks.dtype)
        # The spline is linear, so the field is assembled from fields precomputed per photo:
        # d = A (p - c) - (p - c) + A_xy (sum_k a_k E_k) + t, for every mesh point p.
        amplitude = expression_amplitudes(app, motion, self.gains, self.coupling)
        linear, shift = pose_terms(app, motion, self.gains)
        expression = torch.einsum("tk,kgc->tgc", amplitude, app.expression_fields)
        coords = app.coordinate_fields
        field = torch.einsum("tgc,tdc->tgd", expression, linear[:, :, :2]) \
            + torch.einsum("gc,tdc->tgd", coords, linear) - coords[None, :, :2] \
            + app.constant_field[None, :, None] * shift[:, None]
        field = (2 * field).transpose(1, 2).reshape(frames, 2, COARSE_GRID, COARSE_GRID)
        grid = backward_map(field, size)
        image = app.image[None].expand(frames, -1, -1, -1)
        out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
        lips = _place(app, list(tp.UPPER_LIP_INNER + tp.LOWER_LIP_INNER), amplitude, linear, shift) * size
        upper, lower = lips[:, : len(tp.UPPER_LIP_INNER)], lips[:, len(tp.UPPER_LIP_INNER):]
        out = composite_mouth(out, upper, lower, app.rest_opening, app.mouth_window, app.brightness)
        for upper_ids, lower_ids, rest, window, skin in app.eyes:
            lids = _place(app, list(upper_ids + lower_ids), amplitude, linear, shift) * size
            out = composite_lid(out, lids[:, : len(upper_ids)], lids[:, len(upper_ids):], rest, window, skin)
        if paste_back:
            if app.paste is None:
                raise InputError("paste-back needs the full photo; encode with keep_photo=True")
            out = app.paste(out)
        return out
