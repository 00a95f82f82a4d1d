"""Small randomly initialised generators for tests (not a test module itself)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dystream.generator.config import preset
from dystream.generator.model import Generator
from dystream.generator.untrained import active_random_generator
from dystream.motion import MOTION_DIM, REST


def tiny_generator(seed: int = 0, **overrides) -> Generator:
    """A small generator whose zero-initialised layers are given small random values.

    A fresh head outputs exactly the motion mean (zero-initialised output), which
    would make every comparison trivially pass; this looks like a partly trained model.
    The front end is the plain one unless ``front_warps`` is given (tests pass it).
    """
    sizes = dict(n_mels=32, audio_width=64, audio_layers=2, width=64, layers=2, heads=4,
                 head_width=64, head_blocks=2, window=16, dropout=0.0, front_warps=())
    sizes.update(overrides)
    return active_random_generator(preset("small", **sizes), seed, head_scale=0.05)


def speech_like(num_samples: int, seed: int) -> np.ndarray:
    """Noise bursts with a syllable-rate envelope: enough structure for the encoders."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / 16000
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6)), 0, None)
    tone = np.sin(2 * np.pi * rng.uniform(120, 220) * t)
    return (0.2 * envelope * (tone + 0.5 * rng.standard_normal(num_samples))).astype(np.float32)


def anchor_frame(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (REST + 0.05 * rng.standard_normal(MOTION_DIM)).astype(np.float32)


@pytest.fixture(autouse=True)
def single_thread():
    """Batch-1 steps are fastest on one thread; two threads on a shared 2-core box mostly wait."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
