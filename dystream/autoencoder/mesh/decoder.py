"""The mesh decoder: (appearance, motion) -> frames, by warping the photo.

Per frame: expression coefficients -> landmark displacements (calibrated basis),
head pose relative to the photo's own -> 3D rotation, translation and scale of the
landmarks, then the thin-plate-spline warp of the crop, the mouth interior, and
optionally the paste-back into the full photo. All in torch, batched over frames;
device and dtype follow the appearance. :meth:`MeshDecoder.render_batch` renders
frames of B different photos (an :class:`AppearanceBatch`) in one pass.

Supported pose range (relative to a frontal photo): yaw +/-20 deg, pitch +/-15 deg,
roll +/-15 deg, translation +/-0.08 of the crop, log scale +/-0.1. Beyond it the
warp stretches hair and cheeks visibly (it has no hidden side of the head to show).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dystream.autoencoder.mesh import topology as tp
from dystream.autoencoder.mesh.crop import CropBox, PasteBack, PasteBatch
from dystream.autoencoder.mesh.eyelid import composite_lid, composite_lid_batch
from dystream.autoencoder.mesh.mouth import composite_mouth, composite_mouth_batch
from dystream.autoencoder.mesh.pose import rotation_matrix
from dystream.autoencoder.mesh.warp import COARSE_GRID, backward_map
from dystream.autoencoder.mesh.window import Windows, every_frame
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
        # The crop holds whole numbers 0..255 (the encoder cuts it as bytes): store it as
        # bytes, a quarter of the size; from_state_dict reads either back exactly.
        if torch.equal(tensors["image"], tensors["image"].round().clamp(0, 255)):
            tensors["image"] = tensors["image"].to(torch.uint8)
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
            paste=None if photo is None else PasteBack(photo, box).to(device, dtype),
        )


APPEARANCE_FORMAT = "dystream.mesh_appearance.v1"
_TENSOR_FIELDS = ("image", "landmarks", "basis", "expression_fields", "coordinate_fields", "constant_field",
                  "centre", "rest_opening", "brightness")


LIP_POINTS = tp.UPPER_LIP_INNER + tp.LOWER_LIP_INNER


@dataclass
class EyeBatch:
    """One eye of every photo in an :class:`AppearanceBatch`."""

    upper: slice                   # the upper lid's points in AppearanceBatch.points
    lower: slice                   # and the lower lid's
    rest_opening: torch.Tensor     # [B] each photo's own opening, output pixels
    windows: Windows               # a window of one size around each photo's eye
    skin: torch.Tensor             # [B, 3] lid colour 0..255


@dataclass
class AppearanceBatch:
    """B appearances of one resolution, device and dtype, stacked for one batched render
    (:meth:`MeshDecoder.render_batch`). Make it once per set of photos with :meth:`stack`
    and reuse it: stacking copies every photo's spline fields (~3 MB each in float32).
    It is a snapshot: stack again after changing an appearance (e.g. ``.to(device)``).

    ``points`` are the few mesh points the composites follow, per photo: the inner lips
    (:data:`LIP_POINTS`), then each eye's upper and lower lid (see ``eyes``).
    """

    appearances: list[MeshAppearance]
    image: torch.Tensor              # [B, 3, S, S]
    m0: torch.Tensor                 # [B, MOTION_DIM]
    expression_fields: torch.Tensor  # [B, NUM_EXPRESSION, G*G, 2]
    coordinate_fields: torch.Tensor  # [B, G*G, 3]
    constant_field: torch.Tensor     # [B, G*G]
    centre: torch.Tensor             # [B, 3]
    points: torch.Tensor             # [B, P, 3] rest positions, crop units
    point_basis: torch.Tensor        # [B, NUM_EXPRESSION, P, 2]
    rest_opening: torch.Tensor       # [B, K] gap between paired inner lip points, output pixels
    brightness: torch.Tensor         # [B]
    mouth: Windows                   # a window of one size around each photo's mouth
    eyes: list[EyeBatch]
    _paste: PasteBatch | None = dataclasses.field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.appearances)

    @property
    def resolution(self) -> int:
        return int(self.image.shape[-1])

    @staticmethod
    def mismatch(appearances: list[MeshAppearance]) -> str | None:
        """Why these appearances cannot be stacked (None when they can)."""
        if not appearances:
            return "no appearances"
        kinds = {(a.resolution, a.image.device, a.image.dtype) for a in appearances}
        if len(kinds) > 1:
            found = ", ".join(f"{r} px {d} {t}" for r, d, t in sorted(kinds, key=str))
            return f"they differ in resolution, device or dtype ({found})"
        if len({tuple((len(u), len(lo)) for u, lo, *_ in a.eyes) for a in appearances}) > 1:
            return "their eye contours differ in length"
        return None

    @classmethod
    def stack(cls, appearances: list[MeshAppearance]) -> "AppearanceBatch":
        """Collate B appearances (same resolution, device and dtype, else InputError)."""
        appearances = list(appearances)
        problem = cls.mismatch(appearances)
        if problem:
            raise InputError(f"cannot render these {len(appearances)} appearances in one batch: {problem}")
        first = appearances[0]
        size, device, dtype = first.resolution, first.image.device, first.image.dtype
        ids = [list(LIP_POINTS) + [i for upper, lower, *_ in a.eyes for i in upper + lower] for a in appearances]

        def stacked(name: str) -> torch.Tensor:
            return torch.stack([getattr(a, name) for a in appearances])

        eyes, start = [], len(LIP_POINTS)
        for e, (upper, lower, *_) in enumerate(first.eyes):
            middle, stop = start + len(upper), start + len(upper) + len(lower)
            eyes.append(EyeBatch(
                upper=slice(start, middle), lower=slice(middle, stop),
                rest_opening=torch.stack([a.eyes[e][2] for a in appearances]),
                windows=Windows.common([a.eyes[e][3] for a in appearances], size, size, device, dtype),
                skin=torch.stack([a.eyes[e][4] for a in appearances])))
            start = stop
        return cls(
            appearances=appearances, image=stacked("image"),
            m0=torch.as_tensor(np.stack([a.m0 for a in appearances]), device=device, dtype=dtype),
            expression_fields=stacked("expression_fields"), coordinate_fields=stacked("coordinate_fields"),
            constant_field=stacked("constant_field"), centre=stacked("centre"),
            points=torch.stack([a.landmarks[i] for a, i in zip(appearances, ids)]),
            point_basis=torch.stack([a.basis[:, i] for a, i in zip(appearances, ids)]),
            rest_opening=stacked("rest_opening"), brightness=stacked("brightness"),
            mouth=Windows.common([a.mouth_window for a in appearances], size, size, device, dtype),
            eyes=eyes,
        )

    def paste_batch(self) -> PasteBatch | None:
        """The batched paste-back (made on first use), or None when the photos differ in
        size (paste them one by one). InputError when a photo was not kept."""
        if any(a.paste is None for a in self.appearances):
            raise InputError("paste-back needs the full photo; encode with keep_photo=True")
        if len({tuple(a.paste.photo.shape) for a in self.appearances}) > 1:
            return None
        if self._paste is None:
            self._paste = PasteBatch([a.paste for a in self.appearances])
        return self._paste


def relative_pose(m0: torch.Tensor, motion: torch.Tensor, gains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame, the 2x3 map A (rotation relative to the photo's, times scale; image rows
    x, y) [..., T, 2, 3] and the translation t [..., T, 2], both in crop units, that move
    a point p to centre + A (p - centre) + t. One photo: m0 [D], motion [T, D]; B photos:
    m0 [B, 1, D], motion [B, T, D]."""
    delta = motion - m0
    p, y, r = (INDEX["pitch"], INDEX["yaw"], INDEX["roll"])
    angles = m0[..., p:r + 1] + delta[..., p:r + 1] * gains.to(motion.device, motion.dtype)[p:r + 1]
    rot = rotation_matrix(angles[..., 0], angles[..., 1], angles[..., 2]) @ \
        rotation_matrix(m0[..., p], m0[..., y], m0[..., r]).transpose(-1, -2)
    scale = torch.exp(delta[..., INDEX["log_scale"]])[..., None, None]
    shift = torch.stack([delta[..., INDEX["tx"]], delta[..., INDEX["ty"]]], -1)
    linear = rot[..., :2, :] * scale
    return torch.cat([linear[..., :2], linear[..., 2:] * DEPTH_FLATTEN], -1), shift


def pose_terms(app: MeshAppearance, motion: torch.Tensor, gains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`relative_pose` of one photo: motion [T, D] -> A [T, 2, 3], t [T, 2]."""
    dev, dt = app.landmarks.device, app.landmarks.dtype
    return relative_pose(torch.as_tensor(app.m0, device=dev, dtype=dt), motion, gains.to(dev, dt))


def amplitudes(m0: torch.Tensor, motion: torch.Tensor, gains: torch.Tensor,
               coupling: torch.Tensor | None = None) -> torch.Tensor:
    """Basis amplitudes [..., T, NUM_EXPRESSION] of motion [..., T, D] on photos whose own
    expression is m0 [NUM_EXPRESSION] (one photo) or [B, 1, NUM_EXPRESSION]."""
    delta = motion[..., :NUM_EXPRESSION] - m0
    if coupling is not None:
        # Written as a product and a sum, not a matmul: a matmul's rounding depends on how many
        # rows it gets, and a frame must come out the same alone and in a batch of photos.
        delta = delta + (delta[..., None, :] * coupling.to(motion.device, motion.dtype)).sum(-1)
    amplitude = delta * gains[:NUM_EXPRESSION].to(motion.device, motion.dtype)
    # Lids meet at amplitude 1; past it they would pass through each other. The gain
    # may close the eye before the coefficient's maximum (MediaPipe reads a closed
    # warped eye at about half), so the amplitude stops there.
    return torch.cat([amplitude[..., :_BLINK_FIRST], amplitude[..., _BLINK_FIRST:_BLINK_FIRST + 2].clamp(max=1.0),
                      amplitude[..., _BLINK_FIRST + 2:]], -1)


def expression_amplitudes(app: MeshAppearance, motion: torch.Tensor, gains: torch.Tensor,
                          coupling: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`amplitudes` of one photo: motion [T, D] -> [T, NUM_EXPRESSION]."""
    m0 = torch.as_tensor(app.m0[:NUM_EXPRESSION], device=motion.device, dtype=motion.dtype)
    return amplitudes(m0, motion, gains, coupling)


_BLINK_FIRST = INDEX["eyeBlinkLeft"]
assert INDEX["eyeBlinkRight"] == _BLINK_FIRST + 1


def place_points(rest: torch.Tensor, basis: torch.Tensor, centre: torch.Tensor, amplitude: torch.Tensor,
                 linear: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Warped positions [..., T, N, 2] (crop units) of points at ``rest`` [..., N, 3] with
    displacement fields ``basis`` [..., NUM_EXPRESSION, N, 2] about ``centre`` [..., 3],
    for amplitudes [..., T, NUM_EXPRESSION] and the pose terms of :func:`relative_pose`
    (leading dims: none for one photo, [B] for B photos)."""
    moved = torch.einsum("...tk,...knc->...tnc", amplitude, basis)
    relative = rest - centre[..., None, :]
    xy = (relative[..., None, :, :2] + moved) @ linear[..., :2].transpose(-1, -2) \
        + relative[..., None, :, 2:] * linear[..., None, :, 2]
    return centre[..., None, None, :2] + xy + shift[..., None, :]


def _place(app: MeshAppearance, indices: list[int], amplitude: torch.Tensor, linear: torch.Tensor,
           shift: torch.Tensor) -> torch.Tensor:
    return place_points(app.landmarks[indices], app.basis[:, indices], app.centre, amplitude, linear, shift)


def forward_field(expression_fields: torch.Tensor, coordinate_fields: torch.Tensor, constant_field: torch.Tensor,
                  amplitude: torch.Tensor, linear: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The coarse forward displacement field [N, 2, G, G] (grid units) of N frames, from a
    photo's precomputed spline fields ([K, G*G, 2], [G*G, 3], [G*G]; with a leading [B]
    for B photos) and per-frame amplitudes and pose terms ([T, ...] or [B, T, ...]);
    N = T, or B*T photo-major.

    The spline is linear, so the field is assembled from fields precomputed per photo:
    d = A (p - c) - (p - c) + A_xy (sum_k a_k E_k) + t, for every mesh point p.
    """
    expression = torch.einsum("...tk,...kgc->...tgc", amplitude, expression_fields)
    coords = coordinate_fields
    field = torch.einsum("...tgc,...tdc->...tgd", expression, linear[..., :2]) \
        + torch.einsum("...gc,...tdc->...tgd", coords, linear) - coords[..., None, :, :2] \
        + constant_field[..., None, :, None] * shift[..., None, :]
    return (2 * field).transpose(-1, -2).reshape(-1, 2, COARSE_GRID, COARSE_GRID)


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
        amplitude = expression_amplitudes(app, motion, self.gains, self.coupling)
        linear, shift = pose_terms(app, motion, self.gains)
        field = forward_field(app.expression_fields, app.coordinate_fields, app.constant_field,
                              amplitude, linear, shift)
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

    def render_batch(self, batch: AppearanceBatch, motion: torch.Tensor,
                     skip_idle: bool | None = None) -> torch.Tensor:
        """motion [B, T, MOTION_DIM] -> frames [B, T, 3, S, S] float 0..255: motion[b] on
        photo b of ``batch``, as :meth:`render` draws it (equal up to float rounding), in
        one pass over all B*T frames: one warp inversion, one grid_sample, one mouth and
        one composite per eye. No paste-back (see :class:`PasteBatch`). The frames are a
        view of [B, 3, T, S, S] memory (``.contiguous()`` when that matters).

        ``skip_idle``: skip the mouth (lid) composite when no lips part (no eye closes)
        in any frame. The check reads a device value back (one host sync each), so by
        default it runs on a CPU only; the frames are the same either way.
        """
        count = len(batch)
        if motion.ndim != 3 or motion.shape[0] != count or motion.shape[-1] != MOTION_DIM:
            raise InputError(f"motion for {count} photos must be [{count}, frames, {MOTION_DIM}], "
                             f"got {tuple(motion.shape)}")
        size, frames = batch.resolution, motion.shape[1]
        dev, dt = batch.image.device, batch.image.dtype
        motion = motion.to(dev, dt)
        # non_blocking: a host-to-device copy of a few numbers should not wait for the device.
        gains = self.gains.to(dev, dt, non_blocking=True)
        coupling = self.coupling.to(dev, dt, non_blocking=True)
        m0 = batch.m0[:, None]                                              # [B, 1, D]
        amplitude = amplitudes(m0[..., :NUM_EXPRESSION], motion, gains, coupling)   # [B, T, K]
        linear, shift = relative_pose(m0, motion, gains)
        field = forward_field(batch.expression_fields, batch.coordinate_fields, batch.constant_field,
                              amplitude, linear, shift)                     # [B*T, 2, G, G]
        grid = backward_map(field, size)                                    # [B*T, S, S, 2]
        # Each photo is sampled once for all its frames (stacked as one tall grid), so the
        # photo is not copied per frame; the frames come out as [B, 3, T, S, S] memory.
        out = F.grid_sample(batch.image, grid.reshape(count, frames * size, size, 2), mode="bilinear",
                            padding_mode="border", align_corners=False)
        out = out.view(count, 3, frames, size, size).transpose(1, 2)        # [B, T, 3, S, S] view
        points = place_points(batch.points, batch.point_basis, batch.centre, amplitude, linear, shift) * size
        check = dev.type == "cpu" if skip_idle is None else skip_idle
        return self._composite_batch(out, points.flatten(0, 1), batch, check)

    @staticmethod
    def _composite_batch(out: torch.Tensor, points: torch.Tensor, batch: AppearanceBatch,
                         check: bool) -> torch.Tensor:
        """Mouth interior and lids into ``out`` [B, T, 3, S, S], with the composite points
        [B*T, P, 2] in output pixels."""
        photo, frame = every_frame(out.shape[0], out.shape[1], out.device)
        upper_end = len(tp.UPPER_LIP_INNER)
        out = composite_mouth_batch(out, points[:, :upper_end], points[:, upper_end:len(LIP_POINTS)], photo, frame,
                                    batch.rest_opening, batch.mouth, batch.brightness, skip_closed=check)
        for eye in batch.eyes:
            out = composite_lid_batch(out, points[:, eye.upper], points[:, eye.lower], photo, frame,
                                      eye.rest_opening, eye.windows, eye.skin, skip_open=check)
        return out
