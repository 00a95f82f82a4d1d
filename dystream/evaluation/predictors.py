"""Predictors to evaluate: the ground truth, the RMS baseline and a trained generator.

Each is a function ``(conversation, party, seed) -> motion [T, MOTION_DIM]``; the
generator's also has ``predict_batch`` so that evaluation runs many
(conversation, party, seed) streams through one batched rollout.
"""

from __future__ import annotations

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

    def __init__(self, model, sampling=None, *, batch_size: int = DEFAULT_BATCH) -> None:
        from dystream.generator.sampling import Sampling

        self.model, self.sampling = model, sampling or Sampling()
        self.batch_size = int(batch_size)
        # evaluate_many hands over groups of at least this many items: two batches' worth, so
        # that the rollout's chunks are full and of similar clip lengths.
        self.batch_items = 2 * self.batch_size

    def _item(self, conv: Conversation, party: int, seed: int):
        return conv.audio[party], conv.audio[1 - party], neutral_frame(conv, party), seed

    def __call__(self, conv: Conversation, party: int, seed: int) -> np.ndarray:
        return self.predict_batch([(conv, party, seed)])[0]

    def predict_batch(self, items) -> list[np.ndarray]:
        from dystream.generator.offline import generate_motions

        return generate_motions(self.model, [self._item(*item) for item in items], sampling=self.sampling,
                                batch_size=self.batch_size)


def generator_predictor(checkpoint: str | None = None, *, device: str = "cpu", sampling=None,
                        batch_size: int = DEFAULT_BATCH) -> Predictor:
    """The trained generator, anchored on each party's neutral frame.

    ``checkpoint`` None loads the bundled weights. The generator package is
    imported here, not at module import, so scoring data needs no torch model.
    """
    from dystream.generator.weights import load_generator

    return GeneratorPredictor(load_generator(checkpoint, device), sampling, batch_size=batch_size)
