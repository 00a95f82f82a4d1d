"""Motion read off real faces: a photo's m0, or a video's motion per frame at 25 fps.

A video is read inside one face crop fixed from the first frame where a face is
seen, so that head translation and scale are measured against the same box.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from dystream.errors import InputError


def photo_motion(photo: np.ndarray, resolution: int = 256, source: str = "photo") -> np.ndarray:
    """The motion m0 [MOTION_DIM] of the face in a photo (HxWx3 uint8 RGB)."""
    from dystream.autoencoder.mesh.encoder import MeshEncoder

    encoder = MeshEncoder(resolution)
    try:
        _, m0 = encoder.encode(photo, keep_photo=False, source=source)
    finally:
        encoder.close()
    return m0


def video_motion(path: str | Path, resolution: int = 256, max_frames: int | None = None) -> np.ndarray:
    """[T, MOTION_DIM] motion of a video at 25 fps; frames without a face hold the last reading."""
    from dystream.autoencoder.mesh.encoder import MeshEncoder
    from dystream.video import read_video

    encoder = MeshEncoder(resolution)
    rows: list[np.ndarray | None] = []
    box = None
    try:
        for index, frame in enumerate(read_video(path)):
            if max_frames is not None and index >= max_frames:
                break
            if box is None:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        _, box = encoder.find_face(frame, source=f"{path} frame {index}")
                except InputError:
                    rows.append(None)
                    continue
            rows.append(encoder.read_motion(frame, box))
    finally:
        encoder.close()
    if not rows:
        raise InputError(f"{path}: no video frames could be read")
    seen = [r for r in rows if r is not None]
    if not seen:
        raise InputError(f"{path}: no face found in any frame")
    missing = sum(r is None for r in rows)
    if missing:
        warnings.warn(f"{path}: no face in {missing} of {len(rows)} frames; they hold the nearest reading",
                      stacklevel=2)
    out = np.empty((len(rows), len(seen[0])), np.float32)
    last = seen[0]
    for t, row in enumerate(rows):
        last = row if row is not None else last
        out[t] = last
    return out
