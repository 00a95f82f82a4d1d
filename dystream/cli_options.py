"""Command-line options that several commands share (``generate``, ``demo``, ``evaluate``)."""

from __future__ import annotations

import argparse
import json


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """``--steps``, ``--guidance`` and ``--pose-guidance``; read them with ``sampling_from``."""
    from dystream.generator.guidance import DEFAULT_GUIDANCE, DEFAULT_POSE_GUIDANCE
    from dystream.generator.sampling import SAMPLER_STEPS

    parser.add_argument("--steps", type=int, default=SAMPLER_STEPS,
                        help=f"flow sampler steps per frame (default {SAMPLER_STEPS})")
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


def sampling_from(args: argparse.Namespace):
    """The :class:`Sampling` of a command line's options, checked (a bad value fails before any work)."""
    from dystream.generator.guidance import command_line_guidance
    from dystream.generator.sampling import Sampling

    guidance, pose_guidance = command_line_guidance(args.guidance, args.pose_guidance)
    return Sampling(args.steps, guidance, pose_guidance)
