"""``dystream generate``: photo + self/other audio files -> mp4 (and motion), offline.

IO lives here; the model only sees arrays. With one audio file the partner is
silent; with two, the face talks while self speaks and listens while the other
does. The mp4's sound is both streams mixed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from dystream.errors import InputError

RENDER_BATCH = 50  # frames decoded per call: bounded memory for long clips


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--photo", required=True, help="a photo with one face (PNG/JPEG)")
    parser.add_argument("--self-audio", required=True, help="what the person in the photo says (any audio file)")
    parser.add_argument("--other-audio", help="what the conversation partner says (optional; silent if absent)")
    parser.add_argument("-o", "--output", required=True, help="mp4 to write")
    add_generation_options(parser)
    parser.set_defaults(func=run)


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--motion-out", help="also write the generated motion (.npz, .json or .csv)")
    parser.add_argument("--steps", type=int, default=5, help="flow sampler steps per frame (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (same seed, same motion)")
    add_guidance_options(parser)
    parser.add_argument("--lookahead-ms", type=int,
                        help="audio lookahead the weights must have been trained with (checked, default: theirs)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    parser.add_argument("--weights", help="generator weights (.safetensors); default: the bundled small model")
    parser.add_argument("--resolution", type=int, default=256, choices=[256, 512], help="rendered frame size")


def add_guidance_options(parser: argparse.ArgumentParser) -> None:
    """``--guidance`` and ``--pose-guidance`` (also used by ``dystream evaluate``)."""
    import json

    from dystream.generator.config import DEFAULT_GUIDANCE, DEFAULT_POSE_GUIDANCE

    parser.add_argument("--guidance", metavar="JSON",
                        help="classifier-free guidance weights of the expression channels, a JSON dict merged "
                             f"over the paper's {json.dumps({k: v for k, v in DEFAULT_GUIDANCE.items() if v})} "
                             "(branches self, other, anchor, all), e.g. '{\"self\": 1.5}' for crisper "
                             "lip closures and a wider mouth; the pose keeps its own default unless "
                             "--pose-guidance is given")
    parser.add_argument("--pose-guidance", metavar="S|JSON",
                        help="guidance of the head pose channels: a JSON dict of branch weights merged over "
                             "the expression's (self 0.5, other 0.5, all 1), or a scale in [0, 1] toward the "
                             "'all' branch (1 = the pose guided like the expression, as in the paper; "
                             f"0 = the 'all' branch alone); default {json.dumps(DEFAULT_POSE_GUIDANCE)}")


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


def make_video(photo: np.ndarray, self_audio: np.ndarray, other_audio: np.ndarray | None, output, *,
               motion_out=None, steps=5, seed=0, guidance=None, pose_guidance=None, lookahead_ms=None,
               device="cpu", weights=None, resolution=256, log=print) -> dict:
    """The whole offline pipeline on arrays; returns timings and sizes."""
    import torch

    from dystream.autoencoder import load_autoencoder
    from dystream.config import SAMPLES_PER_FRAME
    from dystream.generator.guidance import plan_guidance
    from dystream.generator.inference import generate_motion
    from dystream.generator.retarget import photo_anchor, to_photo
    from dystream.generator.weights import load_generator
    from dystream.motion import MotionSequence
    from dystream.video import write_mp4

    if len(self_audio) < SAMPLES_PER_FRAME:
        raise InputError("the self audio is shorter than one 40 ms frame; give at least a second of speech")
    if steps < 1:
        raise InputError(f"--steps must be at least 1, got {steps}")
    plan_guidance(guidance, pose_guidance)  # bad guidance fails before the models load
    started = time.perf_counter()
    model = load_generator(weights, device)
    trained = {model.cfg.self_lookahead_ms, model.cfg.other_lookahead_ms}
    if lookahead_ms is not None and trained != {lookahead_ms}:
        shown = " / ".join(f"{ms} ms" for ms in (model.cfg.self_lookahead_ms, model.cfg.other_lookahead_ms))
        raise InputError(
            f"these weights were trained with a {shown} lookahead (self / other), not {lookahead_ms} ms; "
            "lookahead is built into the audio encoders, so use weights trained for it "
            "(`dystream train generator --lookahead-ms ...`)"
        )
    autoencoder = load_autoencoder("mesh", resolution=resolution, device=device)
    appearance, m0 = autoencoder.encode(photo)
    t_encode = time.perf_counter()
    anchor = photo_anchor(model, m0)
    generated = generate_motion(model, self_audio, other_audio, anchor, steps=steps, seed=seed,
                                guidance=guidance, pose_guidance=pose_guidance, device=device)
    motion = to_photo(generated, anchor, m0)  # the photo's own expression + the generated movement
    t_motion = time.perf_counter()
    if motion_out:
        MotionSequence(motion).save(motion_out)
    motion_tensor = torch.from_numpy(motion).to(device)

    def frames():
        for start in range(0, len(motion), RENDER_BATCH):
            yield from autoencoder.decode(appearance, motion_tensor[start: start + RENDER_BATCH]).cpu().numpy()

    audio = mix(self_audio, other_audio)[: len(motion) * SAMPLES_PER_FRAME]
    write_mp4(output, frames(), audio)
    done = time.perf_counter()
    result = {"frames": len(motion), "seconds": len(motion) / 25, "generate_s": t_motion - t_encode,
              "total_s": done - started}
    log(f"wrote {output}: {result['frames']} frames ({result['seconds']:.1f} s of video) in "
        f"{result['total_s']:.1f} s (motion {result['generate_s']:.1f} s)"
        + (f"; motion in {motion_out}" if motion_out else ""))
    return result


def run(args) -> int:
    from dystream.audio.io import load_audio
    from dystream.generator.guidance import command_line_guidance
    from dystream.video import read_image

    # checked here, before any file is read
    guidance, pose_guidance = command_line_guidance(args.guidance, args.pose_guidance)

    for label, path in (("photo", args.photo), ("self audio", args.self_audio), ("other audio", args.other_audio)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{label} not found: {path}")
    photo = read_image(args.photo)
    self_audio = load_audio(args.self_audio)
    other_audio = load_audio(args.other_audio, allow_empty=True) if args.other_audio else None
    if not np.any(self_audio):
        print(f"note: {args.self_audio} is silent: the face will only listen", file=sys.stderr)
    make_video(photo, self_audio, other_audio, args.output, motion_out=args.motion_out, steps=args.steps,
               seed=args.seed, guidance=guidance, pose_guidance=pose_guidance, lookahead_ms=args.lookahead_ms,
               device=args.device, weights=args.weights, resolution=args.resolution)
    return 0
