"""The frame step captured as a CUDA graph: one launch per frame instead of hundreds.

On a GPU a frame of the generator is launch-bound: both encoders' step, the
transformer step and every sampler step x guidance branch are hundreds of small
kernels. ``FrameStep`` keeps every per-frame quantity in device tensors updated in
place, so its call can be captured once and replayed. ``GraphedFrameStep`` does
that; ``frame_step(...)`` picks it on CUDA unless ``DYSTREAM_CUDA_GRAPHS=0`` (a
capture that fails prints a warning and falls back to the eager step, the same
function).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import torch

from dystream.generator.model import Generator
from dystream.generator.sampling import FrameStep, Sampling

GRAPHS_ENV = "DYSTREAM_CUDA_GRAPHS"


def graphs_enabled() -> bool:
    """CUDA graphs are on unless ``DYSTREAM_CUDA_GRAPHS=0`` (or false/off/no)."""
    return os.environ.get(GRAPHS_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


class GraphedFrameStep:
    """A ``FrameStep`` of its first ``streams`` rows (default: the active ones) captured once in
    a CUDA graph; each call replays it. Its buffers (``audio``, ``motion``, state) are the
    step's: write and read them the same way. The step's streams may join and leave later
    (their buffers keep their memory); the graph always steps the first ``streams`` rows
    (``masked``: advancing those the step's ``advance`` marks, as ``FrameStep(masked=True)``)."""

    def __init__(self, step: FrameStep, warmup: int = 3, streams: int | None = None, masked: bool = False) -> None:
        self.step, self.masked = step, masked
        self.streams = step.active if streams is None else int(streams)
        snapshot = [t.clone() for t in step.state_tensors()]
        # Warm-up on a side stream (cuBLAS handles and plans are made outside the capture).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                step(self.streams, masked)
        torch.cuda.current_stream().wait_stream(side)
        for buffer, saved in zip(step.state_tensors(), snapshot):  # the warm-up frames never happened
            buffer.copy_(saved)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._motion = step(self.streams, masked)
        torch.cuda.synchronize()

    def __getattr__(self, name: str):
        # audio, motion, streams, frame, reset(), ...: the captured step's own.
        return getattr(self.__dict__["step"], name)

    def __call__(self) -> torch.Tensor:
        self.graph.replay()
        return self._motion


def frame_step(model: Generator, anchors, seeds: Sequence[int], sampling: Sampling = Sampling(), *,
               graphs: bool | None = None) -> tuple[FrameStep | GraphedFrameStep, bool]:
    """(step, graphed): a CUDA-graphed frame step where possible, else the eager ``FrameStep``.

    ``graphs`` None follows ``DYSTREAM_CUDA_GRAPHS``; graphs are only tried on CUDA."""
    step = FrameStep(model, anchors, seeds, sampling)
    want = graphs_enabled() if graphs is None else graphs
    if not want or model.device.type != "cuda":
        return step, False
    try:
        return GraphedFrameStep(step), True
    except Exception as exc:  # any capture failure: the eager step computes the same function
        print(f"warning: CUDA graph capture failed ({type(exc).__name__}: {exc}); running eager "
              f"(set {GRAPHS_ENV}=0 to skip the attempt)", file=sys.stderr)
        torch.cuda.synchronize()
        return FrameStep(model, anchors, seeds, sampling), False  # fresh buffers
