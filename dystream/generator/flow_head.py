"""Flow-matching head: a small AdaLN MLP that denoises one motion frame.

Path: x_sigma = (1 - sigma) x0 + sigma eps, sigma in [0, 1]. The head predicts the
clean frame x0 from (x_sigma, sigma, c_t); the velocity follows as
v = (x_sigma - x0_hat) / sigma. Each block holds two residual MLP sub-layers, the
first modulated (shift, scale, gate) by the flow-time embedding, the second by the
transformer's condition c_t; LayerNorms have no affine. All modulation layers and
the output layer start at zero, so a fresh head is the identity on its residual
stream and predicts x0 = 0 (the motion mean) — a stable start.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of sigma in [0, 1] (scaled to 0..1000) -> [.., dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=sigma.device, dtype=torch.float32) / half)
    angles = (1000.0 * sigma.float())[..., None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1).to(sigma.dtype if sigma.is_floating_point() else torch.float32)


class ModulatedMLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, x, shift, scale_plus_one, gate):
        h = torch.addcmul(shift, self.norm(x), scale_plus_one)
        # The MLP's layers applied directly: this runs steps x branches x blocks times per frame,
        # where module calls would cost more than the small matmuls.
        first, _, second = self.mlp
        h = F.linear(F.gelu(F.linear(h, first.weight, first.bias)), second.weight, second.bias)
        return torch.addcmul(x, gate, h)


class FlowHead(nn.Module):
    def __init__(self, motion_dim: int, cond_width: int, width: int, blocks: int) -> None:
        super().__init__()
        self.width, self.num_blocks = width, blocks
        self.x_in = nn.Linear(motion_dim, width)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_in = nn.Linear(cond_width, width)
        self.time_sublayers = nn.ModuleList(ModulatedMLP(width) for _ in range(blocks))
        self.cond_sublayers = nn.ModuleList(ModulatedMLP(width) for _ in range(blocks))
        # One linear each for all blocks' (shift, scale, gate): a step costs two matmuls, not 2 x blocks.
        self.time_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width * blocks))
        self.cond_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width * blocks))
        self.out_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.out_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, motion_dim)
        for layer in (self.time_modulation[1], self.cond_modulation[1], self.out_modulation[1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _split_modulation(self, modulation: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """[.., 3 * width * blocks] -> per block (shift, 1 + scale, gate)."""
        parts = modulation.chunk(3 * self.num_blocks, dim=-1)
        return [(parts[3 * i], parts[3 * i + 1] + 1, parts[3 * i + 2]) for i in range(self.num_blocks)]

    def condition(self, c: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Per-frame work that does not depend on the flow time: done once per frame, not per step."""
        cond = self.cond_in(c)
        return cond, self._split_modulation(self.cond_modulation(cond))

    def time_terms(self, sigma: torch.Tensor) -> tuple[torch.Tensor, list]:
        temb = self.time_mlp(timestep_embedding(sigma, self.width))
        return temb, self._split_modulation(self.time_modulation(temb))

    def output_terms(self, cond: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, scale = self.out_modulation(cond + temb).chunk(2, dim=-1)
        return shift, scale + 1

    def denoise(self, x, cond_mod, time_mod, out_terms) -> torch.Tensor:
        """x0_hat from x [.., D] and precomputed condition / time / output terms (broadcastable)."""
        h = self.x_in(x)
        for i in range(self.num_blocks):
            h = self.time_sublayers[i](h, *time_mod[i])
            h = self.cond_sublayers[i](h, *cond_mod[i])
        shift, scale_plus_one = out_terms
        return self.out(torch.addcmul(shift, self.out_norm(h), scale_plus_one))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x [.., D], sigma [..] (same leading shape), c [.., cond_width] -> x0_hat [.., D]."""
        cond, cond_mod = self.condition(c)
        temb, time_mod = self.time_terms(sigma)
        return self.denoise(x, cond_mod, time_mod, self.output_terms(cond, temb))


def sigma_schedule(steps: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Noise levels 1 -> 0, linear, as one tensor of steps + 1 values."""
    return torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=dtype)


def euler_sample(denoise_fn, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Euler integration of the flow from sigma=1 (noise) to 0.

    ``denoise_fn(x, i)`` returns x0_hat at step i. With v = (x - x0_hat) / sigma_i,
    x <- x + (sigma_{i+1} - sigma_i) v, written as x0_hat + (sigma_{i+1}/sigma_i)(x - x0_hat)
    to avoid a division per element. Sigmas stay on the device: no host sync.
    """
    x = noise
    ratios = sigmas[1:] / sigmas[:-1]
    for i in range(sigmas.shape[0] - 1):
        x0_hat = denoise_fn(x, i)
        x = torch.lerp(x0_hat, x, ratios[i])
    return x
