"""``dystream encode IMAGE_OR_VIDEO -o motion.npz``: read motion off a photo or a video.

A photo gives one frame, its m0; a video gives its motion per frame at 25 fps
(:mod:`dystream.pipeline.capture`).
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="a photo (png, jpg, ...) or a video (mp4, mov, ...)")
    parser.add_argument("-o", "--output", required=True, help="motion file to write (.npz, .json or .csv)")
    parser.add_argument("--resolution", type=int, default=256, choices=(256, 512),
                        help="crop size the landmarker reads (256 matches the decoder's default)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from dystream.config import FRAMES_PER_SECOND
    from dystream.motion import MotionSequence
    from dystream.pipeline.capture import photo_motion, video_motion
    from dystream.video import is_video, read_image

    if is_video(args.input):
        values = video_motion(args.input, args.resolution)
    else:
        values = photo_motion(read_image(args.input), args.resolution, source=str(args.input))[None]
    path = MotionSequence(values, FRAMES_PER_SECOND).save(args.output)
    print(f"wrote {len(values)} frame(s) of motion to {path}")
    return 0
