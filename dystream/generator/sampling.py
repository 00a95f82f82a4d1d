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
    """One frame of up to ``capacity`` streams, every varying quantity in a device tensor.

    Streams occupy rows 0 .. ``active`` - 1; ``anchors`` [B, D] (raw motion) and one
    integer seed each start the first B, ``add`` / ``remove`` let streams join and leave
    later (a leaving stream's place is taken by the last one, so the active rows stay a
    prefix and every buffer keeps its memory: a CUDA graph captured on the first n rows
    stays valid). Per frame, either write each stream's audio slice into ``audio[SELF]`` /
    ``audio[OTHER]`` (rows [active, step_samples]: the samples frame f reads, from
    ``640 f - front_left_samples``) and call the object, or hand both encoders' features of
    the frame to ``sample``. Returns ``motion`` [active, D] (raw units). Call inside
    ``torch.inference_mode()``.
    """

    def __init__(self, model: Generator, anchors, seeds: Sequence[int], sampling: Sampling = Sampling(),
                 capacity: int | None = None) -> None:
        self.model, self.sampling = model, sampling
        cfg, device, dtype = model.cfg, model.device, model.dtype
        anchors = np.asarray(anchors, dtype=np.float32)
        if anchors.ndim != 2 or anchors.shape[1] != cfg.motion_dim:
            raise InputError(f"anchors must be [streams, {cfg.motion_dim}], got {tuple(anchors.shape)}")
        seeds = [int(s) for s in np.atleast_1d(np.asarray(seeds))]
        if len(seeds) != len(anchors):
            raise InputError(f"{len(anchors)} anchors need as many seeds, got {len(seeds)}")
        self.capacity = len(anchors) if capacity is None else int(capacity)
        if self.capacity < max(len(anchors), 1):
            raise InputError(f"capacity {self.capacity} cannot hold {len(anchors)} streams")
        plan = sampling.plan
        self.branches = n = plan.size
        keep_self, keep_other, self._keep_anchor = plan.keep_masks(device)
        # [n], or [n, D] when the pose channels have their own coefficients.
        self._weights = plan.weight_tensor(device, dtype, cfg.motion_dim)
        self._sigmas = sigma_schedule(sampling.steps, device, dtype)
        # Flow-time terms depend only on the step index: computed once.
        self._time_emb, time_mod = model.head.time_terms(self._sigmas[:-1])
        self._time_mod = [[tuple(t[i] for t in block) for block in time_mod] for i in range(sampling.steps)]
        self._channels = torch.arange(cfg.motion_dim, device=device, dtype=torch.int64)

        c, d = self.capacity, cfg.motion_dim
        self._keep = (keep_self.repeat(c), keep_other.repeat(c))
        # Per stream: the anchor in the model's units (the first frame's context and the anchor
        # token's input), the raw anchor's pose shift (pose-relative models work relative to
        # it), the noise key, the frame index, the fed-back previous frame and the output.
        self._anchor = torch.zeros(c, d, device=device, dtype=dtype)
        self._shift = torch.zeros(c, d, device=device, dtype=dtype)
        self._noise_keys = torch.zeros(c, dtype=torch.int64, device=device)
        self._frame = torch.zeros(c, dtype=torch.int64, device=device)
        self._previous = torch.zeros(c, 1, d, device=device, dtype=dtype)
        self._motion = torch.zeros(c, d, device=device, dtype=dtype)
        self._audio = [torch.zeros(c, e.step_samples, device=device, dtype=dtype) for e in model.encoders]
        self._states = [e.initial_state(c, device) for e in model.encoders]
        self._cache = model.transformer.empty_cache(c * n, device, dtype)
        # Which streams a masked step advances (``step(..., masked=True)``); the others compute
        # but keep their state, so streams of one batch can be at their own pace.
        self.advance = torch.ones(c, dtype=torch.bool, device=device)
        self.active, self.seeds = 0, []
        for anchor, seed in zip(anchors, seeds):
            self.add(anchor, seed)

    # -- the active rows --------------------------------------------------------------------
    @property
    def streams(self) -> int:
        return self.active

    def _per_stream(self) -> list[torch.Tensor]:
        """Every buffer with one row per stream (dim 0), encoder states included."""
        return [self._anchor, self._shift, self._noise_keys, self._frame, self._previous, self._motion,
                *self._audio, *self._states[0], *self._states[1]]

    @property
    def audio(self) -> list[torch.Tensor]:
        return [a[:self.active] for a in self._audio]

    @property
    def motion(self) -> torch.Tensor:
        return self._motion[:self.active]

    @property
    def frame(self) -> torch.Tensor:
        return self._frame[:self.active]

    def rows(self, per_stream: torch.Tensor) -> torch.Tensor:
        """[B, ...] -> [B * n, ...]: each stream's tensor repeated for its n guidance branches."""
        b, n = per_stream.shape[0], self.branches
        return per_stream[:, None].expand(b, n, *per_stream.shape[1:]).reshape(b * n, *per_stream.shape[1:])

    def state_tensors(self) -> list[torch.Tensor]:
        """Every buffer a frame writes (for snapshots around a graph's warm-up)."""
        return [*self._states[0], *self._states[1], self._cache.keys, self._cache.values, self._frame,
                self._previous, self._motion]

    # -- streams joining and leaving --------------------------------------------------------
    def add(self, anchor, seed: int) -> int:
        """A new stream at frame 0 with this anchor (raw motion [D]) and seed; returns its row."""
        if self.active >= self.capacity:
            raise InputError(f"all {self.capacity} streams of this step are in use")
        model, row, n = self.model, self.active, self.branches
        anchor = torch.as_tensor(np.asarray(anchor, dtype=np.float32), device=model.device).to(model.dtype)[None]
        if anchor.shape != (1, model.cfg.motion_dim):
            raise InputError(f"an anchor must have {model.cfg.motion_dim} values, got {tuple(anchor.shape[1:])}")
        self._shift[row] = model.pose_shift(anchor)[0]
        self._anchor[row] = model.to_model(anchor, anchor)[0]
        self._noise_keys[row] = seed_keys(torch.tensor([int(seed)], dtype=torch.int64, device=model.device))[0]
        tokens = model.anchor_token(self.rows(self._anchor[row:row + 1]), self._keep_anchor)
        model.transformer.set_anchor(self._cache, slice(row * n, (row + 1) * n), tokens)
        self.active += 1
        self.seeds.append(int(seed))
        self._restart(slice(row, row + 1))
        return row

    def remove(self, row: int) -> int | None:
        """Drop the stream in ``row``; the last stream moves into its place. Returns the row the
        moved stream came from (None when the removed one was the last)."""
        if not 0 <= row < self.active:
            raise ValueError(f"no stream in row {row} (active {self.active})")
        last = self.active - 1
        if row != last:
            self._copy_rows(torch.tensor([last], device=self._frame.device), row)
            self.seeds[row] = self.seeds[last]
        self.seeds.pop()
        self.active -= 1
        return last if row != last else None

    def keep(self, streams: Sequence[int]) -> None:
        """Keep only these streams (rows, in their new order); the rest have ended."""
        index = torch.as_tensor(list(streams), dtype=torch.int64, device=self._frame.device)
        if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= self.active:
            raise ValueError(f"keep({list(streams)}) with {self.active} streams")
        self._copy_rows(index, 0)
        self.seeds = [self.seeds[i] for i in index.tolist()]
        self.active = index.numel()

    def _copy_rows(self, index: torch.Tensor, start: int) -> None:
        """Streams ``index`` copied into rows start, start + 1, ... (in place: buffers keep
        their memory)."""
        k, n = index.numel(), self.branches
        for tensor in self._per_stream():
            tensor[start:start + k] = tensor.index_select(0, index)
        rows = (index[:, None] * n + torch.arange(n, device=index.device)).reshape(-1)
        for tensor in (self._cache.keys, self._cache.values, self._cache.anchor_keys):
            tensor[:, start * n:(start + k) * n] = tensor.index_select(1, rows)

    def _restart(self, streams: slice) -> None:
        """These streams back to frame 0: empty ring (anchor kept), encoder states zero, the face
        at the anchor."""
        n = self.branches
        rows = slice(streams.start * n, streams.stop * n)
        self._cache.keys[:, rows, :, 1:] = 0
        self._cache.values[:, rows, :, 1:] = 0
        for state in (*self._states[0], *self._states[1]):
            state[streams] = 0
        self._frame[streams] = 0
        self._previous[streams] = self._anchor[streams, None]
        self._motion[streams] = 0

    def reset(self) -> None:
        """Back to frame 0 for every stream."""
        self._restart(slice(0, self.active))

    # -- the frame --------------------------------------------------------------------------
    def encode(self, streams: int | None = None, masked: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Both encoders' features [B, A] of the frame whose audio is in ``audio`` (the first
        ``streams`` rows; default the active ones); ``masked``: only the streams ``advance``
        marks keep their new encoder state."""
        b = self.active if streams is None else streams
        features = []
        for encoder, audio, state in zip(self.model.encoders, self._audio, self._states):
            state = [s[:b] for s in state]
            out, new_state = encoder(audio[:b], 1, state)
            for buffer, value in zip(state, new_state):
                buffer.copy_(torch.where(self.advance[:b, None, None], value, buffer) if masked else value)
            features.append(out[:, 0])
        return features[0], features[1]

    def sample(self, self_features: torch.Tensor, other_features: torch.Tensor, masked: bool = False) -> torch.Tensor:
        """Both encoders' features [B, A] of this frame for the first B rows -> their motion
        [B, D] (raw units). ``masked``: only the streams ``advance`` marks move on a frame (ring,
        previous frame, frame index); the others' motion is computed and thrown away."""
        model, n = self.model, self.branches
        b = self_features.shape[0]
        frame, previous = self._frame[:b], self._previous[:b]
        commit = self.rows(self.advance[:b]) if masked else None
        fused = model.fuse_audio(self.rows(self_features), self.rows(other_features),
                                 self._keep[0][:b * n], self._keep[1][:b * n])[:, None]
        condition = model.transformer.step(self.rows(previous), fused, self._cache.rows(b * n), self.rows(frame),
                                           commit)[:, 0]
        cond, cond_mod = model.head.condition(condition)
        # Output modulation for every step at once: [steps, B * n, width] each.
        out_shift, out_scale = model.head.output_terms(cond[None], self._time_emb[:, None])
        plan, weights = self.sampling.plan, self._weights

        def denoise(x: torch.Tensor, i: int) -> torch.Tensor:
            x0 = model.head.denoise(self.rows(x), cond_mod, self._time_mod[i], (out_shift[i], out_scale[i]))
            return plan.combine(x0.view(b, n, -1), weights)  # [B, n, D] -> [B, D]

        noise = frame_noise(self._noise_keys[:b], frame, self._channels, previous.dtype)
        sample = euler_sample(denoise, noise, self._sigmas)  # [B, D] model units
        motion = self._motion[:b]
        if masked:
            advance = self.advance[:b]
            previous.copy_(torch.where(advance[:, None, None], sample[:, None], previous))
            motion.copy_(torch.where(advance[:, None], model.denormalise(sample) + self._shift[:b], motion))
            frame.add_(advance.to(frame.dtype))
        else:
            previous.copy_(sample[:, None])
            motion.copy_(model.denormalise(sample) + self._shift[:b])
            frame.add_(1)
        return motion

    def __call__(self, streams: int | None = None, masked: bool = False) -> torch.Tensor:
        """One frame of the first ``streams`` rows (default: the active ones; a CUDA graph is
        captured for a fixed count) -> their motion [streams, D]; ``masked``: see ``sample``."""
        return self.sample(*self.encode(streams, masked), masked)
