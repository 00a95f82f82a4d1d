"""``dystream generate``: photo + self/other audio files -> mp4 (and motion), offline.

With one audio file the partner is silent; with two, the face talks while self
speaks and listens while the other does. The mp4's sound is both streams mixed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from dystream.errors import InputError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--photo", required=True, help="a photo with one face (PNG/JPEG)")
    parser.add_argument("--self-audio", required=True, help="what the person in the photo says (any audio file)")
    parser.add_argument("--other-audio", help="what the conversation partner says (optional; silent if absent)")
    parser.add_argument("-o", "--output", required=True, help="mp4 to write")
    add_video_options(parser)
    parser.add_argument("--lookahead-ms", type=int,
                        help="audio lookahead the weights must have been trained with (checked, default: theirs)")
    parser.add_argument("--weights", help="generator weights (.safetensors); default: the bundled small model")
    parser.set_defaults(func=run)


def add_video_options(parser: argparse.ArgumentParser) -> None:
    """The options ``generate`` and ``demo`` share."""
    from dystream.cli_options import add_sampling_options

    parser.add_argument("--motion-out", help="also write the generated motion (.npz, .json or .csv)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (same seed, same motion)")
    add_sampling_options(parser)
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    parser.add_argument("--resolution", type=int, default=256, choices=[256, 512], help="rendered frame size")


def mix(self_audio: np.ndarray, other_audio: np.ndarray | None) -> np.ndarray:
    """Both streams in one mono track for the mp4; scaled down only if the sum would clip."""
    if other_audio is None or other_audio.size == 0:
        return self_audio
    n = max(len(self_audio), len(other_audio))
    mixed = np.zeros(n, np.float32)
    mixed[: len(self_audio)] += self_audio
    mixed[: len(other_audio)] += other_audio
    peak = float(np.abs(mixed).max(initial=0.0))
    return mixed / peak if peak > 1.0 else mixed


def write_video(pipeline, photo: np.ndarray, self_audio: np.ndarray, other_audio: np.ndarray | None, output,
                *, seed: int = 0, motion_out=None, log=print) -> dict:
    """Photo and audio through ``pipeline`` into an mp4 (and a motion file); returns timings."""
    from dystream.motion import MotionSequence
    from dystream.video import write_mp4

    started = time.perf_counter()
    avatar = pipeline.prepare(photo)
    encoded = time.perf_counter()
    motion = pipeline.generate(avatar, self_audio, other_audio, seed=seed)
    generated = time.perf_counter()
    if motion_out:
        MotionSequence(motion).save(motion_out)
    audio = mix(self_audio, other_audio)[: len(motion) * pipeline.samples_per_frame]
    write_mp4(output, pipeline.render(avatar, motion), audio)
    seconds = len(motion) / pipeline.model.cfg.frames_per_second
    result = {"frames": len(motion), "seconds": seconds, "generate_s": generated - encoded,
              "total_s": time.perf_counter() - started}
    log(f"wrote {output}: {result['frames']} frames ({seconds:.1f} s of video) in {result['total_s']:.1f} s "
        f"(motion {result['generate_s']:.1f} s)" + (f"; motion in {motion_out}" if motion_out else ""))
    return result


def load_pipeline(args, weights=None):
    """The pipeline a command line asks for (sampling options checked first)."""
    from dystream.cli_options import sampling_from
    from dystream.pipeline import Pipeline

    sampling = sampling_from(args)
    return Pipeline.load(weights, device=args.device, resolution=args.resolution, sampling=sampling)


def run(args) -> int:
    from dystream.audio.io import load_audio
    from dystream.cli_options import sampling_from
    from dystream.config import SAMPLES_PER_FRAME
    from dystream.video import read_image

    sampling_from(args)  # a bad value fails before any file is read
    for label, path in (("photo", args.photo), ("self audio", args.self_audio), ("other audio", args.other_audio)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{label} not found: {path}")
    photo = read_image(args.photo)
    self_audio = load_audio(args.self_audio)
    other_audio = load_audio(args.other_audio, allow_empty=True) if args.other_audio else None
    if len(self_audio) < SAMPLES_PER_FRAME:
        raise InputError(f"the self audio is shorter than one frame ({SAMPLES_PER_FRAME} samples); give at least a "
                         "second of speech")
    if not np.any(self_audio):
        print(f"note: {args.self_audio} is silent: the face will only listen", file=sys.stderr)
    pipeline = load_pipeline(args, args.weights)
    cfg = pipeline.model.cfg
    if args.lookahead_ms is not None and {cfg.self_lookahead_ms, cfg.other_lookahead_ms} != {args.lookahead_ms}:
        raise InputError(
            f"these weights were trained with a {cfg.self_lookahead_ms} ms / {cfg.other_lookahead_ms} ms lookahead "
            f"(self / other), not {args.lookahead_ms} ms; lookahead is built into the audio encoders, so use "
            "weights trained for it (`dystream train generator --lookahead-ms ...`)")
    write_video(pipeline, photo, self_audio, other_audio, args.output, seed=args.seed, motion_out=args.motion_out)
    return 0
