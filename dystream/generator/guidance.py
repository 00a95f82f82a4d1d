"""Classifier-free guidance over the generator's three conditions, and per-frame noise.

Branches (which conditions a branch keeps): none = {}, self = {self audio},
other = {other audio}, anchor = {anchor}, all = {self, other, anchor}. Dropped
conditions are replaced by learned null embeddings, exactly as condition dropout
does in training. The x0 predictions are combined as

    x0 = u + w_self (self - u) + w_other (other - u) + w_anchor (anchor - u) + w_all (all - u)

with u the "none" branch. Branches whose weight is zero are not computed; the
rest run as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dystream.errors import InputError
from dystream.generator.config import BRANCHES, DEFAULT_GUIDANCE

_KEEPS = {  # branch -> (self audio, other audio, anchor)
    "none": (False, False, False),
    "self": (True, False, False),
    "other": (False, True, False),
    "anchor": (False, False, True),
    "all": (True, True, True),
}


@dataclass(frozen=True)
class GuidancePlan:
    """Branches to run (in batch order) and the weight of each (0 for the base "none")."""

    branches: tuple[str, ...]
    weights: tuple[float, ...]

    @property
    def size(self) -> int:
        return len(self.branches)

    def keep_masks(self, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Bool [n] per condition: does branch i keep self audio / other audio / anchor."""
        keeps = torch.tensor([_KEEPS[b] for b in self.branches], dtype=torch.bool, device=device)
        return keeps[:, 0], keeps[:, 1], keeps[:, 2]

    def weight_tensor(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """Coefficients c [n] with guided x0 = sum_i c_i x0_i: the base "none" gets 1 - sum(w)."""
        coefficients = list(self.weights)
        if self.size > 1:
            coefficients[0] = 1.0 - sum(self.weights[1:])
        return torch.tensor(coefficients, device=device, dtype=dtype)

    def combine(self, x0: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """x0 [n, D] per branch -> guided x0 [D] (one small matmul); coefficients from ``weight_tensor``."""
        if self.size == 1:
            return x0[0]
        return coefficients @ x0


def plan_guidance(weights: dict[str, float] | None = None) -> GuidancePlan:
    """The branches worth running for these weights (paper defaults when None).

    With all weights zero the model runs unconditioned ("none" only); with only
    ``all`` at weight 1 the base cancels and just "all" runs.
    """
    merged = dict(DEFAULT_GUIDANCE)
    if weights:
        unknown = set(weights) - set(BRANCHES[1:])
        if unknown:
            raise InputError(f"unknown guidance branch {sorted(unknown)}; use {', '.join(BRANCHES[1:])}")
        merged.update({k: float(v) for k, v in weights.items()})
    active = [(b, merged[b]) for b in BRANCHES[1:] if merged[b] != 0.0]
    if len(active) == 1 and active[0] == ("all", 1.0):
        return GuidancePlan(("all",), (1.0,))
    return GuidancePlan(("none",) + tuple(b for b, _ in active), (0.0,) + tuple(w for _, w in active))


_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer on int64 tensors (low 32 bits kept after each multiply)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def counter_noise(counter: torch.Tensor, key: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Standard normal numbers from int64 counters and a stream key (hash -> Box-Muller).

    Pure tensor arithmetic (no Python scalar becomes a tensor), so it also runs inside a
    captured CUDA graph; ``key`` broadcasts against ``counter``.
    """
    bits_a = _hash32(_hash32(counter ^ key) + (counter >> 32))
    bits_b = _hash32(_hash32((counter + 1) ^ key) + (counter >> 32))
    u1 = ((bits_a >> 8).to(torch.float64) + 0.5) / float(1 << 24)
    u2 = (bits_b >> 8).to(torch.float64) / float(1 << 24)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * torch.pi * u2)
    return z.to(dtype)


def frame_noise(seed: int, frames: torch.Tensor, dim: int, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise [len(frames), dim] that depends only on (seed, frame index).

    Counter-based (hash -> Box-Muller), so a frame's noise is the same whatever the
    chunking, the batch it shares, or the device.
    """
    frames = frames.to(torch.int64)
    channel = torch.arange(dim, device=frames.device, dtype=torch.int64)
    counter = frames[:, None] * (2 * dim) + channel[None] * 2
    key = _hash32(torch.tensor(seed, dtype=torch.int64, device=frames.device) * 0x9E3779B1 + 0x632BE5AB)
    return counter_noise(counter, key, dtype)
