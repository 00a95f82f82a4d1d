"""One frame of B streaming sessions as a fixed sequence of kernels, optionally a CUDA graph.

On a GPU a frame of the generator is launch-bound: both encoders' incremental
step, the transformer step and every sampler step x guidance branch are hundreds
of small kernels. A CUDA graph replays them with one launch, but only if every
per-frame quantity that varies lives in a device tensor updated in place: here
the frame index (ring slot, rotary angle, noise counter, the warm-up mask of the
ring) is a [1] int64 tensor, audio comes in through fixed input buffers, and the
encoder states, ring cache, previous motion and output are fixed buffers written
with ``copy_`` / ``index_copy_``.

``FrameStep`` computes exactly the function of ``Rollout.step`` plus the encoders'
``step`` (tested equal on CPU, where it runs eagerly); ``GraphedFrameStep`` captures
it on CUDA. ``frame_step(...)`` picks one: graphs on CUDA unless
``DYSTREAM_CUDA_GRAPHS=0``; a capture that fails prints a warning and falls back to eager.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import numpy as np
import torch

from dystream.generator.inference import Rollout, keyed_frame_noise, ring_step
from dystream.generator.model import Generator

GRAPHS_ENV = "DYSTREAM_CUDA_GRAPHS"


def graphs_enabled() -> bool:
    """CUDA graphs are on unless ``DYSTREAM_CUDA_GRAPHS=0`` (or false/off/no)."""
    return os.environ.get(GRAPHS_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


class FrameStep:
    """One frame for B sessions, every varying quantity in a device tensor.

    Write the frame's audio into ``self_audio`` / ``other_audio`` ([B, step_samples]
    each: the slice the encoders' ``step`` reads), call the object, read ``motion``
    [B, D] (raw units; the same buffer every frame). Call inside ``torch.inference_mode()``.
    """

    def __init__(self, model: Generator, anchors, seeds: Sequence[int], *, steps: int = 5, guidance=None,
                 pose_guidance=None) -> None:
        anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, model.cfg.motion_dim)
        self.model = model
        # The rollout holds the constants (guidance plan, sigmas, flow-time terms) and the ring cache.
        self.rollout = Rollout(model, anchors, steps=steps, seed=list(seeds), guidance=guidance,
                               pose_guidance=pose_guidance)
        r = self.rollout
        b, device, dtype = r.streams, r.device, r.dtype
        enc_s, enc_o = model.self_encoder, model.other_encoder
        self.self_audio = torch.zeros(b, enc_s.step_samples, device=device, dtype=dtype)
        self.other_audio = torch.zeros(b, enc_o.step_samples, device=device, dtype=dtype)
        self.self_state = enc_s.initial_state(b, device)
        self.other_state = enc_o.initial_state(b, device)
        self.frame = torch.zeros(1, dtype=torch.int64, device=device)
        self.previous = r.anchor[:, None].clone()  # [B, 1, D] normalised
        self.motion = torch.zeros(b, model.cfg.motion_dim, device=device, dtype=dtype)
        self._keep_self = r.keep_self.repeat(b)
        self._keep_other = r.keep_other.repeat(b)

    @property
    def streams(self) -> int:
        return self.rollout.streams

    def state_tensors(self) -> list[torch.Tensor]:
        """Every buffer a frame writes (for snapshots around a graph's warm-up)."""
        c = self.rollout.cache
        return [*self.self_state, *self.other_state, c.keys, c.values, self.frame, self.previous, self.motion]

    def reset(self) -> None:
        """Back to frame 0: empty ring (anchor kept), encoder states zero, face at the anchor."""
        r = self.rollout
        c = r.cache
        c.keys[:, :, :, 1:].zero_()
        c.values[:, :, :, 1:].zero_()
        for state in (*self.self_state, *self.other_state):
            state.zero_()
        self.frame.zero_()
        self.previous.copy_(r.anchor[:, None])
        self.motion.zero_()

    def _encode(self, encoder, audio: torch.Tensor, state: list[torch.Tensor]) -> torch.Tensor:
        features, new_state = encoder.step(audio, state)
        for buffer, value in zip(state, new_state):
            buffer.copy_(value)
        return features[:, 0]

    def __call__(self) -> torch.Tensor:
        model, r = self.model, self.rollout
        f_self = self._encode(model.self_encoder, self.self_audio, self.self_state)
        f_other = self._encode(model.other_encoder, self.other_audio, self.other_state)
        self_b = model.drop_audio(r.rows(f_self), self._keep_self, model.null_self)
        other_b = model.drop_audio(r.rows(f_other), self._keep_other, model.null_other)
        fused = model.transformer.fuse_audio(self_b, other_b)[:, None]
        condition = ring_step(model.transformer, r.cache, r.rows(self.previous), fused, self.frame)[:, 0]
        noise = keyed_frame_noise(r.noise_keys, self.frame, r.channels, r.dtype)
        sample = r.sample(condition, noise)
        self.previous.copy_(sample[:, None])
        self.motion.copy_(model.denormalise(sample) + r.shift)
        self.frame.add_(1)
        return self.motion


class GraphedFrameStep:
    """A ``FrameStep`` captured once in a CUDA graph; each call replays it (one launch)."""

    def __init__(self, step: FrameStep, warmup: int = 3) -> None:
        self.step = step
        snapshot = [t.clone() for t in step.state_tensors()]
        # Warm-up on a side stream (cuBLAS/cuFFT handles and plans are made outside the capture).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                step()
        torch.cuda.current_stream().wait_stream(side)
        for buffer, saved in zip(step.state_tensors(), snapshot):  # the warm-up frames never happened
            buffer.copy_(saved)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            step()
        torch.cuda.synchronize()

    @property
    def self_audio(self) -> torch.Tensor:
        return self.step.self_audio

    @property
    def other_audio(self) -> torch.Tensor:
        return self.step.other_audio

    @property
    def motion(self) -> torch.Tensor:
        return self.step.motion

    @property
    def streams(self) -> int:
        return self.step.streams

    def reset(self) -> None:
        self.step.reset()

    def __call__(self) -> torch.Tensor:
        self.graph.replay()
        return self.step.motion


def frame_step(model: Generator, anchors, seeds: Sequence[int], *, steps: int = 5, guidance=None,
               pose_guidance=None, graphs: bool | None = None) -> tuple[FrameStep | GraphedFrameStep, bool]:
    """(step, graphed): a CUDA-graphed frame step where possible, else the eager ``FrameStep``.

    ``graphs`` None follows ``DYSTREAM_CUDA_GRAPHS``; graphs are only tried on CUDA. A
    capture that fails prints a warning and returns the eager step (same function).
    """
    step = FrameStep(model, anchors, seeds, steps=steps, guidance=guidance, pose_guidance=pose_guidance)
    want = graphs_enabled() if graphs is None else graphs
    if not want or step.rollout.device.type != "cuda":
        return step, False
    try:
        return GraphedFrameStep(step), True
    except Exception as exc:  # any capture failure: the eager step computes the same function
        print(f"warning: CUDA graph capture failed ({type(exc).__name__}: {exc}); running eager "
              f"(set {GRAPHS_ENV}=0 to skip the attempt)", file=sys.stderr)
        torch.cuda.synchronize()
        step = FrameStep(model, anchors, seeds, steps=steps, guidance=guidance,
                         pose_guidance=pose_guidance)  # fresh buffers
        return step, False
