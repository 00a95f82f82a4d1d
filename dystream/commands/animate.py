"""``dystream animate --photo PHOTO --motion motion.npz [--audio a.wav] -o out.mp4``.

Renders a motion file on a photo with the mesh autoencoder and writes H.264 + AAC
at 25 fps; by default the animated face is pasted back into the whole photo.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--photo", required=True, help="photo with one face (png, jpg, ...)")
    parser.add_argument("--motion", required=True, help="motion file (.npz, .json; 25 fps)")
    parser.add_argument("--audio", help="audio to put under the video (any format libsndfile reads)")
    parser.add_argument("-o", "--output", required=True, help="mp4 file to write")
    parser.add_argument("--resolution", type=int, default=256, choices=(256, 512), help="face crop size")
    parser.add_argument("--crop-only", action="store_true", help="write the face crop, not the whole photo")
    parser.add_argument("--device", default="cpu", help="torch device for the decoder, e.g. cuda")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from dystream.audio.io import load_audio
    from dystream.autoencoder import load_autoencoder
    from dystream.config import FRAMES_PER_SECOND, SAMPLE_RATE, SAMPLES_PER_FRAME
    from dystream.pipeline.pipeline import render_frames
    from dystream.errors import InputError
    from dystream.motion import MotionSequence
    from dystream.video import read_image, write_mp4

    photo = read_image(args.photo)
    try:
        motion = MotionSequence.load(args.motion)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read motion file {args.motion}: {exc}") from None
    if motion.fps != FRAMES_PER_SECOND:
        raise InputError(f"{args.motion} is at {motion.fps} fps; dystream renders {FRAMES_PER_SECOND} fps motion")
    audio = None
    if args.audio:
        audio = load_audio(args.audio)
        wanted = len(motion) * SAMPLES_PER_FRAME
        if abs(len(audio) - wanted) > SAMPLES_PER_FRAME:
            warnings.warn(f"audio lasts {len(audio) / SAMPLE_RATE:.2f} s, motion {len(motion) / FRAMES_PER_SECOND:.2f} s;"
                          " audio trimmed or padded to the motion", stacklevel=2)
        audio = np.pad(audio[:wanted], (0, max(wanted - len(audio), 0)))
    autoencoder = load_autoencoder("mesh", resolution=args.resolution, device=args.device)
    appearance, _ = autoencoder.encode(photo)
    autoencoder.encoder.close()
    frames = render_frames(autoencoder, appearance, motion.values, paste_back=not args.crop_only)
    path = write_mp4(args.output, frames, audio)
    print(f"wrote {len(motion)} frames to {path}")
    return 0
