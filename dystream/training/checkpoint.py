"""Training checkpoints: everything needed to continue a run exactly.

A checkpoint holds the model, its EMA copy, the optimizer and scheduler states,
the step, the RNG states in use, elapsed training time, the generator config and
the training options. It is written to a temporary file and renamed into place
(``os.replace`` is atomic on one filesystem), so a crash while saving leaves the
previous checkpoint intact. Only rank 0 writes.

The model and optimizer states are the same on every rank, so a checkpoint
saved by N ranks resumes on M ranks (the batches drawn afterwards differ, since
they depend on the rank).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dystream.errors import InputError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def rng_states() -> dict[str, Any]:
    """States of the global torch RNGs (CPU, and every CUDA device in use)."""
    states: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch_cpu"].cpu())
    cuda_states = states.get("torch_cuda")
    if cuda_states is not None and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically: temp file in the same directory, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save({"format_version": FORMAT_VERSION, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise InputError(f"no checkpoint at {path}; start without --resume or pass the run directory that has one")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: checkpoint format {state.get('format_version')}, this version reads {FORMAT_VERSION}")
    return state
