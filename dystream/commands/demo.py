"""``dystream demo``: the bundled photo talking and listening in a bundled two-voice conversation.

The motion comes from the trained generator (never from ground-truth motion).
"""

from __future__ import annotations

import argparse
from importlib import resources

from dystream.errors import MissingDependencyError


def configure(parser: argparse.ArgumentParser) -> None:
    from dystream.commands.generate import add_video_options

    parser.add_argument("-o", "--output", default="dystream-demo.mp4", help="mp4 to write (default dystream-demo.mp4)")
    add_video_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from dystream.audio.io import load_audio
    from dystream.cli_options import sampling_from
    from dystream.commands.generate import load_pipeline, write_video
    from dystream.video import bundled_photo

    sampling_from(args)  # a bad value fails before any work
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
    write_video(load_pipeline(args), bundled_photo(), streams[0], streams[1], args.output, seed=args.seed,
                motion_out=args.motion_out)
    return 0
