"""``dystream encode IMAGE_OR_VIDEO -o motion.npz``: read motion off a photo or a video.

A photo gives one frame, its m0; a video gives its motion per frame at 25 fps
(resampled), read inside one face crop fixed from the first frame where a face is
seen, so that head translation and scale are measured against the same box.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from dystream.errors import InputError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="a photo (png, jpg, ...) or a video (mp4, mov, ...)")
    parser.add_argument("-o", "--output", required=True, help="motion file to write (.npz, .json or .csv)")
    parser.add_argument("--resolution", type=int, default=256, choices=(256, 512),
                        help="crop size the landmarker reads (256 matches the decoder's default)")
    parser.set_defaults(func=main)


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


def main(args: argparse.Namespace) -> int:
    from dystream.config import FRAMES_PER_SECOND
    from dystream.motion import MotionSequence
    from dystream.video import is_video, read_image

    if is_video(args.input):
        values = video_motion(args.input, args.resolution)
    else:
        from dystream.autoencoder.mesh.encoder import MeshEncoder

        encoder = MeshEncoder(args.resolution)
        try:
            _, m0 = encoder.encode(read_image(args.input), keep_photo=False, source=str(args.input))
        finally:
            encoder.close()
        values = m0[None]
    path = MotionSequence(values, FRAMES_PER_SECOND).save(args.output)
    print(f"wrote {len(values)} frame(s) of motion to {path}")
    return 0
