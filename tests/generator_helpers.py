"""Small randomly initialised generators for tests (not a test module itself)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dystream.generator.config import GeneratorConfig, preset
from dystream.generator.model import Generator
from dystream.motion import MOTION_DIM, REST, TYPICAL_MAX


def active_random_generator(cfg: GeneratorConfig, seed: int = 0, head_scale: float = 0.02) -> Generator:
    """A random generator that moves. A freshly initialised one outputs exactly the motion mean
    (its flow head's modulation and output layers start at zero), so any comparison between two
    paths would pass trivially; this gives those layers and the null embeddings small random
    values, like a partly trained model."""
    torch.manual_seed(seed)
    model = Generator(cfg)
    head = model.head
    with torch.no_grad():
        for layer in (head.time_modulation[1], head.cond_modulation[1], head.out_modulation[1], head.out):
            layer.weight.normal_(0.0, head_scale)
            layer.bias.normal_(0.0, head_scale)
        for null in (model.null_self, model.null_other, model.null_anchor):
            null.normal_(0.0, 0.5)
    model.set_motion_stats(torch.from_numpy(REST), torch.from_numpy(TYPICAL_MAX) / 3)
    return model.eval()


TINY_SIZES = dict(n_mels=32, audio_width=64, audio_layers=2, width=64, layers=2, heads=4,
                  head_width=64, head_blocks=2, window=16, front_warps=(), pose_relative=False,
                  self_lookahead_ms=60, other_lookahead_ms=60)


def tiny_generator(seed: int = 0, **overrides) -> Generator:
    """A small generator whose zero-initialised layers are given small random values (see
    ``active_random_generator``). The front end is the plain one and the pose absolute unless
    ``front_warps`` / ``pose_relative`` are given."""
    return active_random_generator(preset("small", **{**TINY_SIZES, **overrides}), seed, head_scale=0.05)


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


def feed_interleaved(session, self_audio, other_audio, self_sizes, other_sizes, rng: np.random.Generator):
    """Feed both streams in chunks of the given sizes, interleaved in a random order, then flush:
    how a live call delivers audio (two streams, any packet sizes, any arrival order)."""
    frames = []
    queues = [list(self_sizes), list(other_sizes)]
    positions = [0, 0]
    audio = (self_audio, other_audio)
    while queues[0] or queues[1]:
        stream = int(rng.integers(2)) if queues[0] and queues[1] else (0 if queues[0] else 1)
        n = queues[stream].pop(0)
        frames += session.feed(stream, audio[stream][positions[stream]: positions[stream] + n])
        positions[stream] += n
    return frames + session.flush()


@pytest.fixture(autouse=True)
def single_thread():
    """Batch-1 steps are fastest on one thread; two threads on a shared 2-core box mostly wait."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
