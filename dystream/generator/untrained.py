"""Untrained generators that still move, for benchmarks and tests.

A freshly initialised generator outputs exactly the motion mean (its flow head's
modulation and output layers start at zero), so any comparison between two paths
(streaming vs offline, graphed vs eager, batched vs single) would pass trivially.
These give the zero-initialised layers and null embeddings small random values,
like a partly trained model.
"""

from __future__ import annotations

import torch

from dystream.generator.config import GeneratorConfig
from dystream.generator.model import Generator
from dystream.motion import REST, TYPICAL_MAX


def active_random_generator(cfg: GeneratorConfig, seed: int = 0, head_scale: float = 0.02) -> Generator:
    torch.manual_seed(seed)
    model = Generator(cfg)
    head = model.head
    with torch.no_grad():
        for layer in (head.time_modulation[1], head.cond_modulation[1], head.out_modulation[1], head.out):
            layer.weight.normal_(0.0, head_scale)
            layer.bias.normal_(0.0, head_scale)
        for null in (model.null_self, model.null_other, model.null_anchor):
            null.normal_(0.0, 0.5)
        for encoder in (model.self_encoder, model.other_encoder):
            if encoder.running_mean is not None:  # a speech-like prior log-mel, not zeros
                encoder.running_mean.prior.normal_(-0.5, 0.3)
    model.set_motion_stats(torch.from_numpy(REST), torch.from_numpy(TYPICAL_MAX) / 3)
    return model.eval()
