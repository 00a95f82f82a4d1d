"""Predictors to evaluate: the ground truth, the RMS baseline and a trained generator.

Each is a function ``(conversation, party, seed) -> motion [T, MOTION_DIM]``; the
generator's also has ``predict_batch`` so that evaluation runs many
(conversation, party, seed) streams through one batched rollout.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dystream.data.schema import Conversation
from dystream.evaluation.core import Predictor, neutral_frame
from dystream.metrics.events import rms_baseline_motion

# Streams per batched rollout on a CPU: large enough that per-op overhead is shared, small
# enough that one frame step stays in cache (measured on the 2-core development machine).
DEFAULT_BATCH = 64


def ground_truth_predictor(conv: Conversation, party: int, seed: int) -> np.ndarray:
    """The conversation's own motion: scores perfectly wherever a score compares to it."""
    return conv.motion[party]


def rms_baseline_predictor(conv: Conversation, party: int, seed: int) -> np.ndarray:
    """Audio RMS -> jawOpen, every other channel at rest (no listening, no pose)."""
    return rms_baseline_motion(conv.audio[party], conv.num_frames)


class GeneratorPredictor:
    """The generator anchored on each party's neutral frame; call one item or ``predict_batch`` many."""

    def __init__(self, model, *, device: str = "cpu", steps: int = 5, guidance: Any = None,
                 pose_guidance: Any = None, batch_size: int = DEFAULT_BATCH) -> None:
        from dystream.generator.guidance import plan_guidance

        plan_guidance(guidance, pose_guidance)  # bad weights fail here, not after the first conversation
        self.model, self.device, self.steps, self.guidance = model, device, steps, guidance
        self.pose_guidance = pose_guidance
        self.batch_size = int(batch_size)
        # evaluate_many hands over groups of at least this many items: two batches' worth, so
        # that the rollout's chunks are full and of similar clip lengths.
        self.batch_items = 2 * self.batch_size

    def _item(self, conv: Conversation, party: int, seed: int):
        return conv.audio[party], conv.audio[1 - party], neutral_frame(conv, party), seed

    def __call__(self, conv: Conversation, party: int, seed: int) -> np.ndarray:
        from dystream.generator.inference import generate_motion

        self_audio, other_audio, anchor, seed = self._item(conv, party, seed)
        return generate_motion(self.model, self_audio, other_audio, anchor, steps=self.steps, seed=seed,
                               guidance=self.guidance, pose_guidance=self.pose_guidance, device=self.device)

    def predict_batch(self, items) -> list[np.ndarray]:
        from dystream.generator.inference import generate_motion_batch

        return generate_motion_batch(self.model, [self._item(*item) for item in items], steps=self.steps,
                                     guidance=self.guidance, pose_guidance=self.pose_guidance,
                                     device=self.device, batch_size=self.batch_size)


def generator_predictor(checkpoint: str | None = None, *, device: str = "cpu", steps: int = 5,
                        guidance: Any = None, pose_guidance: Any = None,
                        batch_size: int = DEFAULT_BATCH) -> Predictor:
    """The trained generator, anchored on each party's neutral frame.

    ``checkpoint`` None loads the bundled weights. The generator package is
    imported here, not at module import, so scoring data needs no torch model.
    """
    from dystream.generator.weights import load_generator

    return GeneratorPredictor(load_generator(checkpoint, device), device=device, steps=steps,
                              guidance=guidance, pose_guidance=pose_guidance, batch_size=batch_size)
