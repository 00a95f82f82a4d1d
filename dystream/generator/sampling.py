"""Sampling motion frame by frame: the one step that offline generation, streaming
sessions, the CUDA-graph wrapper and benchmarks all run.

``FrameStep`` advances B independent streams by one frame: both audio encoders,
the transformer's ring KV cache for every (stream, guidance branch) row, the flow
head's Euler sampler with classifier-free guidance, and the fed-back previous
frame. Every quantity that varies per frame lives in a device tensor updated in
place (the frame index of each stream, the ring, the encoder states, the previous
motion, the output), so the same call can be captured once and replayed as a CUDA
graph (:mod:`dystream.generator.graphs`). One stream is B = 1.

Rows of a step are stream-major (stream b, branch i -> row b * n + i). A stream's
arithmetic never mixes with another's: attention, cache and noise are per row, and
a frame's noise depends only on the stream's seed and the frame index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from dystream.errors import InputError
from dystream.generator.flow_head import euler_sample, sigma_schedule
from dystream.generator.guidance import GuidancePlan, plan_guidance
from dystream.generator.model import Generator

# Euler steps of the flow sampler per frame, unless a caller asks for others (the paper's 5).
SAMPLER_STEPS = 5


@dataclass(frozen=True)
class Sampling:
    """How frames are sampled: Euler ``steps`` and the guidance weights of every channel
    and of the head pose (see :mod:`dystream.generator.guidance`; None: the defaults)."""

    steps: int = SAMPLER_STEPS
    guidance: dict | None = None
    pose_guidance: float | dict | None = None
    plan: GuidancePlan = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or self.steps < 1:
            raise InputError(f"sampler steps must be a whole number >= 1, got {self.steps!r}")
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "plan", plan_guidance(self.guidance, self.pose_guidance))


# -- noise ---------------------------------------------------------------------------------

_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer on int64 tensors (low 32 bits kept after each multiply)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def seed_keys(seeds: torch.Tensor) -> torch.Tensor:
    """Per-stream noise keys [B] (int64) from integer seeds [B]."""
    return _hash32(seeds.to(torch.int64) * 0x9E3779B1 + 0x632BE5AB)


def frame_noise(keys: torch.Tensor, frames: torch.Tensor, dim: int | torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise [B, dim] of frame ``frames[b]`` of stream b, from its key.

    Counter-based (hash -> Box-Muller): a frame's noise depends only on (seed, frame
    index), whatever the chunking, the batch it shares or the device, and it is pure
    tensor arithmetic, so it also runs inside a captured CUDA graph. ``dim``: the number of
    channels, or their indices ``arange(dim)`` (int64) made once by a caller per frame."""
    channels = torch.arange(dim, device=frames.device, dtype=torch.int64) if isinstance(dim, int) else dim
    dim = channels.shape[0]
    counter = frames.to(torch.int64)[:, None] * (2 * dim) + channels[None] * 2
    key = keys[:, None]
    bits_a = _hash32(_hash32(counter ^ key) + (counter >> 32))
    bits_b = _hash32(_hash32((counter + 1) ^ key) + (counter >> 32))
    u1 = ((bits_a >> 8).to(torch.float64) + 0.5) / float(1 << 24)
    u2 = (bits_b >> 8).to(torch.float64) / float(1 << 24)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * torch.pi * u2)
    return z.to(dtype)


# -- the step ------------------------------------------------------------------------------

class FrameStep:
    """One frame of B streams, every varying quantity in a device tensor.

    ``anchors`` [B, D] (raw motion) and one integer seed per stream. Per frame, either
    write each stream's audio slice into ``audio[SELF]`` / ``audio[OTHER]`` ([B,
    step_samples]: the samples frame f reads, from ``640 f - front_left_samples``) and
    call the object, or hand over both encoders' features of the frame to ``sample``
    (offline generation encodes a whole clip in one call). Returns ``motion`` [B, D]
    (raw units; the same buffer every frame). Call inside ``torch.inference_mode()``.
    """

    def __init__(self, model: Generator, anchors, seeds: Sequence[int], sampling: Sampling = Sampling()) -> None:
        self.model, self.sampling = model, sampling
        cfg, device, dtype = model.cfg, model.device, model.dtype
        anchors = torch.as_tensor(np.asarray(anchors, dtype=np.float32), device=device).to(dtype)
        if anchors.dim() != 2 or anchors.shape[1] != cfg.motion_dim or anchors.shape[0] < 1:
            raise InputError(f"anchors must be [streams, {cfg.motion_dim}], got {tuple(anchors.shape)}")
        seeds = [int(s) for s in np.atleast_1d(np.asarray(seeds))]
        if len(seeds) != anchors.shape[0]:
            raise InputError(f"{anchors.shape[0]} anchors need as many seeds, got {len(seeds)}")
        plan = sampling.plan
        self.branches = plan.size
        keep_self, keep_other, self._keep_anchor = plan.keep_masks(device)
        # [n], or [n, D] when the pose channels have their own coefficients.
        self._weights = plan.weight_tensor(device, dtype, cfg.motion_dim)
        self._sigmas = sigma_schedule(sampling.steps, device, dtype)
        # Flow-time terms depend only on the step index: computed once.
        self._time_emb, time_mod = model.head.time_terms(self._sigmas[:-1])
        self._time_mod = [[tuple(t[i] for t in block) for block in time_mod] for i in range(sampling.steps)]

        b = anchors.shape[0]
        self._keep = (keep_self.repeat(b), keep_other.repeat(b))
        # The raw anchor's pose shift (pose_relative models work relative to it) and the anchor
        # in the model's units: the first frame's context and the anchor token's input.
        self.shift = model.pose_shift(anchors)
        self.anchor = model.to_model(anchors, anchors)
        self.noise_keys = seed_keys(torch.tensor(seeds, dtype=torch.int64, device=device))
        self._channels = torch.arange(cfg.motion_dim, device=device, dtype=torch.int64)
        self.seeds = seeds
        encoders = model.encoders
        self.audio = [torch.zeros(b, e.step_samples, device=device, dtype=dtype) for e in encoders]
        self.encoder_states = [e.initial_state(b, device) for e in encoders]
        tokens = model.anchor_token(self.rows(self.anchor), self._keep_anchor.repeat(b))
        self.cache = model.transformer.new_cache(tokens)
        self.frame = torch.zeros(b, dtype=torch.int64, device=device)
        self.previous = self.anchor[:, None].clone()  # [B, 1, D] model units
        self.motion = torch.zeros(b, cfg.motion_dim, device=device, dtype=dtype)

    @property
    def streams(self) -> int:
        return self.anchor.shape[0]

    def rows(self, per_stream: torch.Tensor) -> torch.Tensor:
        """[B, ...] -> [B * n, ...]: each stream's tensor repeated for its n guidance branches."""
        b, n = per_stream.shape[0], self.branches
        return per_stream[:, None].expand(b, n, *per_stream.shape[1:]).reshape(b * n, *per_stream.shape[1:])

    def state_tensors(self) -> list[torch.Tensor]:
        """Every buffer a frame writes (for snapshots around a graph's warm-up)."""
        return [*self.encoder_states[0], *self.encoder_states[1], self.cache.keys, self.cache.values,
                self.frame, self.previous, self.motion]

    def reset(self) -> None:
        """Back to frame 0 for every stream: empty ring, encoder states zero, face at the anchor."""
        self.cache.keys[:, :, :, 1:].zero_()
        self.cache.values[:, :, :, 1:].zero_()
        for state in (*self.encoder_states[0], *self.encoder_states[1]):
            state.zero_()
        self.frame.zero_()
        self.previous.copy_(self.anchor[:, None])
        self.motion.zero_()

    def keep(self, streams: Sequence[int]) -> None:
        """Keep only these streams (indices, in their new order); the rest have ended."""
        index = torch.as_tensor(list(streams), dtype=torch.int64, device=self.frame.device)
        if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= self.streams:
            raise ValueError(f"keep({list(streams)}) with {self.streams} streams")
        rows = (index[:, None] * self.branches + torch.arange(self.branches, device=index.device)).reshape(-1)
        # Contiguous copies (once per change): every later frame reads them whole.
        self.cache = self.cache.select(rows)
        for name in ("shift", "anchor", "noise_keys", "frame", "previous", "motion"):
            setattr(self, name, getattr(self, name).index_select(0, index).contiguous())
        self.audio = [a.index_select(0, index).contiguous() for a in self.audio]
        self.encoder_states = [[s.index_select(0, index).contiguous() for s in states]
                               for states in self.encoder_states]
        self._keep = tuple(k.view(-1, self.branches).index_select(0, index).reshape(-1) for k in self._keep)
        self.seeds = [self.seeds[i] for i in index.tolist()]

    def encode(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Both encoders' features [B, A] of the frame whose audio is in ``audio``."""
        features = []
        for encoder, audio, state in zip(self.model.encoders, self.audio, self.encoder_states):
            out, new_state = encoder(audio, 1, state)
            for buffer, value in zip(state, new_state):
                buffer.copy_(value)
            features.append(out[:, 0])
        return features[0], features[1]

    def sample(self, self_features: torch.Tensor, other_features: torch.Tensor) -> torch.Tensor:
        """Both streams' features [B, A] of this frame -> its motion [B, D] (raw units)."""
        model, b, n = self.model, self.streams, self.branches
        fused = model.fuse_audio(self.rows(self_features), self.rows(other_features), *self._keep)[:, None]
        condition = model.transformer.step(self.rows(self.previous), fused, self.cache, self.rows(self.frame))[:, 0]
        cond, cond_mod = model.head.condition(condition)
        # Output modulation for every step at once: [steps, B * n, width] each.
        out_shift, out_scale = model.head.output_terms(cond[None], self._time_emb[:, None])
        plan, weights = self.sampling.plan, self._weights

        def denoise(x: torch.Tensor, i: int) -> torch.Tensor:
            x0 = model.head.denoise(self.rows(x), cond_mod, self._time_mod[i], (out_shift[i], out_scale[i]))
            return plan.combine(x0.view(b, n, -1), weights)  # [B, n, D] -> [B, D]

        noise = frame_noise(self.noise_keys, self.frame, self._channels, self.previous.dtype)
        sample = euler_sample(denoise, noise, self._sigmas)  # [B, D] model units
        self.previous.copy_(sample[:, None])
        self.motion.copy_(model.denormalise(sample) + self.shift)
        self.frame.add_(1)
        return self.motion

    def __call__(self) -> torch.Tensor:
        return self.sample(*self.encode())
