"""Predictors to evaluate: the ground truth, the RMS baseline and a trained generator.

Each is a function ``(conversation, party, seed) -> motion [T, MOTION_DIM]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dystream.data.schema import Conversation
from dystream.evaluation.core import Predictor, neutral_frame
from dystream.metrics.events import rms_baseline_motion


def ground_truth_predictor(conv: Conversation, party: int, seed: int) -> np.ndarray:
    """The conversation's own motion: scores perfectly wherever a score compares to it."""
    return conv.motion[party]


def rms_baseline_predictor(conv: Conversation, party: int, seed: int) -> np.ndarray:
    """Audio RMS -> jawOpen, every other channel at rest (no listening, no pose)."""
    return rms_baseline_motion(conv.audio[party], conv.num_frames)


def generator_predictor(checkpoint: str | None = None, *, device: str = "cpu", steps: int = 5,
                        guidance: Any = None) -> Predictor:
    """The trained generator, anchored on each party's neutral frame.

    ``checkpoint`` None loads the bundled weights. The generator package is
    imported here, not at module import, so scoring data needs no torch model.
    """
    from dystream.generator.inference import generate_motion
    from dystream.generator.weights import load_generator

    model = load_generator(checkpoint, device)

    def predict(conv: Conversation, party: int, seed: int) -> np.ndarray:
        anchor = neutral_frame(conv, party)
        return generate_motion(model, conv.audio[party], conv.audio[1 - party], anchor,
                               steps=steps, seed=seed, guidance=guidance, device=device)

    return predict
