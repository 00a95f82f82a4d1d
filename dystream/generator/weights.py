"""Saving and loading generator weights: safetensors with the config and a training record."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from dystream.errors import InputError, MissingDependencyError
from dystream.generator.config import GeneratorConfig
from dystream.generator.model import Generator

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "generator-small.safetensors"


def save_weights(model: Generator, path, info: dict | None = None, *, dtype: torch.dtype | None = None) -> Path:
    """Write the state dict (optionally cast, e.g. fp16) with metadata ``config`` and ``info`` (JSON).

    Written to a temporary file and renamed, so a reader never sees a half-written file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point() and not name.startswith("motion_"):
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()
    metadata = {"config": model.cfg.to_json(), "info": json.dumps(info or {}, default=str),
                "format": "dystream-generator-1"}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def read_metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def prepare_for_inference(model: Generator, device="cpu") -> Generator:
    """``model`` (float32) on ``device`` in eval mode, with its audio encoders in float64 on the
    CPU: a streaming session (one frame per encoder call) then computes the same motion as
    the offline path (a whole clip per call) bit for bit, where float32 matmuls of the two
    shapes round differently (~1e-5 in motion with trained weights); it costs 0.3-0.6 ms per
    frame for both encoders. GPUs keep float32 encoders (the CUDA-graph step is float32)."""
    model = model.to(device).eval()
    if torch.device(device).type == "cpu":
        model.set_encoder_dtype(torch.float64)
    return model


def load_generator(path=None, device="cpu", inference: bool = True) -> Generator:
    """A Generator ready for inference on ``device`` (``prepare_for_inference``: eval mode,
    float32, float64 audio encoders on the CPU), from a file written by save_weights.
    ``inference=False``: float32 throughout, as training holds it (initial weights, averages)."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.exists():
        if path == DEFAULT_WEIGHTS:
            raise MissingDependencyError(
                f"trained generator weights not found at {path}; they are produced by "
                "`dystream train generator` (see docs/generator.md) — pass --weights PATH to use your own"
            )
        raise InputError(f"generator weights not found: {path}")
    from safetensors.torch import load_file

    try:
        meta = read_metadata(path)
        cfg = GeneratorConfig.from_json(meta["config"])
    except Exception as exc:
        raise InputError(f"{path} is not a dystream generator weights file ({exc})") from None
    model = Generator(cfg)
    state = load_file(str(path))
    state = {k: v.float() for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"{path} does not match the generator (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.weights_info = json.loads(meta.get("info", "{}"))
    return prepare_for_inference(model, device) if inference else model.to(device).eval()
