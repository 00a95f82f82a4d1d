"""The mesh encoder: photo -> (appearance, m0) with MediaPipe's face landmarker.

m0 is read from the face crop at the decoder's resolution — the very image the
decoder warps — so that decoding m0 gives back the crop and re-encoding it gives
back m0.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from dystream.autoencoder.mesh import topology as tp
from dystream.autoencoder.mesh.basis import build_basis
from dystream.autoencoder.mesh.crop import MIN_FACE_PIXELS, CROP_SCALE, CropBox, PasteBack, cut
from dystream.autoencoder.mesh.decoder import MeshAppearance
from dystream.autoencoder.mesh.landmarker import FaceLandmarker, FaceReading
from dystream.autoencoder.mesh.pose import angles_from_transform
from dystream.autoencoder.mesh.warp import spline_fields
from dystream.errors import InputError
from dystream.motion import EXPRESSION_NAMES, INDEX, MOTION_DIM, REST

# RMS radius of the 3D mesh over the crop side on a face cropped at CROP_SCALE:
# log_scale is measured against it, so a freshly cropped face reads about 0.
NOMINAL_RADIUS = 0.205
HEAD_RING_SCALE = 1.3    # ring of head control points, relative to the face oval
RING_FOLLOW = 0.6        # share of the oval's expression displacement the ring takes


def as_rgb_uint8(image: np.ndarray, *, source: str = "image") -> np.ndarray:
    """Accept HxW / HxWx1 gray, HxWx3 RGB, HxWx4 RGBA, uint8 or float in [0, 1]; return HxWx3 uint8."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.floating) and not np.issubdtype(image.dtype, np.integer):
            raise InputError(f"{source}: unsupported pixel type {image.dtype}")
        if image.size == 0:
            raise InputError(f"{source}: empty image")
        peak = float(np.nanmax(image))
        scale = 255.0 if np.issubdtype(image.dtype, np.floating) and peak <= 1.0 else 1.0
        image = np.clip(np.nan_to_num(image.astype(np.float64)) * scale, 0, 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[0] < 2 or image.shape[1] < 2:
        raise InputError(f"{source}: expected an HxWx3 image, got shape {image.shape}")
    channels = image.shape[2]
    if channels == 1:
        image = np.repeat(image, 3, axis=2)
    elif channels == 4:
        # Composite on white: a transparent background should not read as a dark blob.
        alpha = image[..., 3:].astype(np.float32) / 255
        image = (image[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    elif channels != 3:
        raise InputError(f"{source}: {channels} channels; expected gray, RGB or RGBA")
    return np.ascontiguousarray(image)


def motion_from_reading(face: FaceReading, size: float) -> np.ndarray:
    """m [MOTION_DIM] from one landmarker reading of an image ``size`` pixels wide (a crop)."""
    m = REST.copy()
    for name in EXPRESSION_NAMES:
        if name in face.blendshapes:
            m[INDEX[name]] = face.blendshapes[name]
    pitch, yaw, roll = angles_from_transform(face.transform)
    mesh = face.landmarks[: tp.NUM_MESH_POINTS] / size
    centre = mesh.mean(axis=0)
    radius = float(np.sqrt(((mesh - centre) ** 2).sum(axis=1).mean()))
    m[INDEX["pitch"]], m[INDEX["yaw"]], m[INDEX["roll"]] = pitch, yaw, roll
    m[INDEX["tx"]], m[INDEX["ty"]] = centre[0] - 0.5, centre[1] - 0.5
    m[INDEX["log_scale"]] = math.log(radius / NOMINAL_RADIUS)
    return m.astype(np.float32)


def _mouth_geometry(landmarks: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    upper = landmarks[list(tp.UPPER_LIP_INNER), :2] * size
    lower = landmarks[list(tp.LOWER_LIP_INNER), :2] * size
    axis = upper[-1] - upper[0]
    axis = axis / max(np.linalg.norm(axis), 1e-6)
    across = np.array([-axis[1], axis[0]])
    rest_opening = ((lower - upper) @ across).astype(np.float32)
    centre = (upper.mean(axis=0) + lower.mean(axis=0)) / 2
    half_w, half_h = 0.3 * size, 0.3 * size
    col0 = int(np.clip(centre[0] - half_w, 0, size))
    col1 = int(np.clip(centre[0] + half_w, 0, size))
    row0 = int(np.clip(centre[1] - half_h + 0.08 * size, 0, size))
    row1 = int(np.clip(centre[1] + half_h + 0.08 * size, 0, size))
    return rest_opening, (row0, row1, col0, col1)


def _eye_geometry(crop: np.ndarray, landmarks: np.ndarray, kw: dict) -> list:
    """Per eye: lid index lists, the photo's opening, a window, and the lid skin colour
    (sampled between the lid fold and the brow, where the closing lid's skin comes from)."""
    size = crop.shape[0]
    eyes = []
    for corners, upper, lower, fold in (
        (tp.RIGHT_EYE_CORNERS, tp.RIGHT_UPPER_LID, tp.RIGHT_LOWER_LID, tp.RIGHT_LID_FOLD),
        (tp.LEFT_EYE_CORNERS, tp.LEFT_UPPER_LID, tp.LEFT_LOWER_LID, tp.LEFT_LID_FOLD),
    ):
        first, last = sorted(corners, key=lambda i: landmarks[i, 0])
        upper_ids = (first, *upper, last)
        lower_ids = (first, *lower, last)
        points = landmarks[:, :2] * size
        opening = float(np.clip(points[list(lower), 1] - points[list(upper), 1], 0, None).sum())
        x0, y0 = points[list(upper_ids + lower_ids)].min(axis=0)
        x1, y1 = points[list(upper_ids + lower_ids)].max(axis=0)
        pad = 0.03 * size
        window = (int(max(y0 - pad, 0)), int(min(y1 + pad, size)), int(max(x0 - pad, 0)), int(min(x1 + pad, size)))
        # Lid skin: a little above the fold line (the crease itself is darker).
        samples = []
        for a in fold:
            x = int(np.clip(points[a, 0], 0, size - 1))
            y = int(np.clip(points[a, 1] - 0.012 * size, 0, size - 1))
            samples.append(crop[y, x])
        skin = np.median(np.array(samples, np.float32), axis=0)
        eyes.append((upper_ids, lower_ids, torch.tensor(opening, **kw), window, torch.from_numpy(skin).to(**kw)))
    return eyes


def _skin_brightness(crop: np.ndarray, landmarks: np.ndarray) -> float:
    """Mean light of cheeks and nose bridge relative to a mid-tone face (clamped)."""
    size = crop.shape[0]
    samples = []
    for index in (50, 280, 6, 117, 346):
        x, y = (landmarks[index, :2] * size).astype(int)
        patch = crop[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3]
        if patch.size:
            samples.append(patch.reshape(-1, 3).mean(axis=0))
    if not samples:
        return 1.0
    luminance = float(np.mean(samples, axis=0) @ np.array([0.299, 0.587, 0.114]))
    return float(np.clip(luminance / 170.0, 0.35, 1.3))


class MeshEncoder:
    """Reads faces with MediaPipe; makes appearances for a given output resolution."""

    def __init__(self, resolution: int = 256, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.resolution = resolution
        self.device = torch.device(device)
        self.dtype = dtype
        self._landmarker: FaceLandmarker | None = None

    @property
    def landmarker(self) -> FaceLandmarker:
        if self._landmarker is None:
            self._landmarker = FaceLandmarker()
        return self._landmarker

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def find_face(self, image: np.ndarray, *, source: str = "image") -> tuple[np.ndarray, CropBox]:
        image = as_rgb_uint8(image, source=source)
        face = self.landmarker.read_largest(image, source=source)
        box = CropBox.around(face.landmarks)
        face_pixels = box.side / CROP_SCALE
        if face_pixels < MIN_FACE_PIXELS:
            raise InputError(f"{source}: the face is only {face_pixels:.0f} pixels across; use a photo where "
                             f"it is at least {MIN_FACE_PIXELS} pixels (a closer or larger picture)")
        return image, box

    def read_crop(self, crop: np.ndarray) -> FaceReading | None:
        faces = self.landmarker.read(crop)
        return faces[0] if faces else None

    def encode(self, image: np.ndarray, *, keep_photo: bool = True, source: str = "image"
               ) -> tuple[MeshAppearance, np.ndarray]:
        image, box = self.find_face(image, source=source)
        size = self.resolution
        crop = cut(image, box, size)
        face = self.read_crop(crop)
        if face is None:
            raise InputError(f"{source}: the face was found but not in its own crop; use a sharper, more frontal photo")
        m0 = motion_from_reading(face, size)
        landmarks = (face.landmarks / size).astype(np.float32)
        basis = build_basis(landmarks)
        mesh = landmarks[: tp.NUM_MESH_POINTS]
        centre = mesh.mean(axis=0)
        # Control points: the mesh plus a ring around the face oval that turns with the
        # head, so hair, ears and neck follow the face instead of tearing from it.
        oval = landmarks[list(tp.FACE_OVAL)]
        ring = oval.copy()
        ring[:, :2] = np.clip(centre[:2] + HEAD_RING_SCALE * (oval[:, :2] - centre[:2]), 0.02, 0.98)
        points = np.concatenate([mesh, ring])
        # Every field the decoder combines: one per basis field (x, y), one per coordinate
        # offset from the centre, and one for a unit shift of all control points.
        count, mesh_count = len(points), tp.NUM_MESH_POINTS
        values = np.zeros((count, len(basis) * 2 + 3 + 1))
        values[:mesh_count, : len(basis) * 2] = basis.transpose(1, 0, 2).reshape(mesh_count, -1)
        # The ring follows its face-oval partner's expression moves in part (a dropping
        # chin pulls the neck below it along instead of crushing the skin in between).
        values[mesh_count:, : len(basis) * 2] = RING_FOLLOW * values[list(tp.FACE_OVAL), : len(basis) * 2]
        values[:, len(basis) * 2: len(basis) * 2 + 3] = points - centre
        values[:, -1] = 1.0
        fields = spline_fields(points[:, :2] * 2 - 1, values)
        grid_cells = fields.shape[0]
        expression_fields = fields[:, : len(basis) * 2].reshape(grid_cells, len(basis), 2).transpose(1, 0, 2)
        rest_opening, window = _mouth_geometry(landmarks, size)
        kw = dict(device=self.device, dtype=self.dtype)
        appearance = MeshAppearance(
            image=torch.from_numpy(crop).permute(2, 0, 1).to(**kw),
            landmarks=torch.from_numpy(landmarks).to(**kw),
            m0=m0,
            basis=torch.from_numpy(basis).to(**kw),
            expression_fields=torch.from_numpy(np.ascontiguousarray(expression_fields)).to(**kw),
            coordinate_fields=torch.from_numpy(np.ascontiguousarray(fields[:, -4:-1])).to(**kw),
            constant_field=torch.from_numpy(np.ascontiguousarray(fields[:, -1])).to(**kw),
            centre=torch.from_numpy(centre).to(**kw),
            rest_opening=torch.from_numpy(rest_opening).to(**kw),
            mouth_window=window,
            brightness=torch.tensor(_skin_brightness(crop, landmarks), **kw),
            eyes=_eye_geometry(crop, landmarks, kw),
            box=box,
            photo=image if keep_photo else None,
            paste=PasteBack(image, box).to(self.device, self.dtype) if keep_photo else None,
        )
        return appearance, m0

    def read_motion(self, frame: np.ndarray, box: CropBox) -> np.ndarray | None:
        """Motion of one video frame inside a fixed crop box, or None when no face is seen."""
        crop = cut(as_rgb_uint8(frame), box, self.resolution)
        face = self.read_crop(crop)
        return None if face is None else motion_from_reading(face, self.resolution)

    def read_rendered(self, frames: np.ndarray) -> np.ndarray:
        """Motion read off rendered crops [T, S, S, 3] (NaN rows where no face is seen)."""
        out = np.full((len(frames), MOTION_DIM), np.nan, np.float32)
        for t, frame in enumerate(frames):
            face = self.read_crop(np.ascontiguousarray(frame))
            if face is not None:
                out[t] = motion_from_reading(face, frame.shape[1])
        return out


def warn_once(message: str) -> None:
    warnings.warn(message, stacklevel=3)
