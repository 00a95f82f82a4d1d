"""``dystream demo``: the bundled photo talking and listening in a bundled two-voice conversation.

The motion comes from the trained generator (never from ground-truth motion).
"""

from __future__ import annotations

import argparse
from importlib import resources

from dystream.errors import MissingDependencyError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="dystream-demo.mp4", help="mp4 to write (default dystream-demo.mp4)")
    parser.add_argument("--motion-out", help="also write the generated motion (.npz, .json or .csv)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--resolution", type=int, default=256, choices=[256, 512], help="rendered frame size")
    parser.set_defaults(func=run)


def run(args) -> int:
    from dystream.audio.io import load_audio
    from dystream.commands.generate import make_video
    from dystream.video import bundled_photo

    assets = resources.files("dystream") / "assets"
    streams = []
    for name in ("demo_self.wav", "demo_other.wav"):
        with resources.as_file(assets / name) as path:
            if not path.is_file():
                raise MissingDependencyError(
                    f"the demo conversation {path} is missing from this install; reinstall dystream "
                    "or run `dystream generate --photo PHOTO --self-audio A.wav --other-audio B.wav -o out.mp4`"
                )
            streams.append(load_audio(path))
    print("demo: the astronaut speaks the 'self' voice and listens to the 'other' voice")
    make_video(bundled_photo(), streams[0], streams[1], args.output, motion_out=args.motion_out,
               seed=args.seed, device=args.device, resolution=args.resolution)
    return 0
