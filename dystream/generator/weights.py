"""Saving and loading generator weights: safetensors with the architecture and a training record.

Format ``dystream-generator-2``: the state dict of :class:`Generator` (the inference
network only), metadata ``config`` (the :class:`GeneratorConfig` JSON), ``info``
(the training record, JSON) and ``format``. Files of format 1, written before the
architecture and the training recipe were separated, load too: their recipe fields
and training-only tensors (auxiliary heads) are dropped, which changes nothing the
network computes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from dystream.errors import InputError, MissingDependencyError
from dystream.generator.config import GeneratorConfig
from dystream.generator.model import Generator

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "generator-small.safetensors"
FORMAT = "dystream-generator-2"
# Tensors of format-1 files that only training used (the auxiliary heads of the recipe).
_LEGACY_TRAINING_TENSORS = ("future_probe.", "phone_probe.", "voice_probe.")


def save_weights(model: Generator, path, info: dict | None = None, *, dtype: torch.dtype | None = None) -> Path:
    """Write the state dict (optionally cast, e.g. fp16; the motion statistics stay float32) with
    metadata ``config`` and ``info`` (JSON). Written to a temporary file and renamed, so a reader
    never sees a half-written file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point() and not name.startswith("motion_"):
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()
    metadata = {"config": model.cfg.to_json(), "info": json.dumps(info or {}, default=str), "format": FORMAT}
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


def read_weights(path) -> tuple[GeneratorConfig, dict[str, torch.Tensor], dict]:
    """(architecture, float32 state dict of the network, training record) of a weights file of
    any format, or a clear error for a file that is not one."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        meta = read_metadata(path)
        cfg = GeneratorConfig.from_json(meta["config"])
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path} is not a dystream generator weights file ({exc})") from None
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    if meta.get("format") != FORMAT:  # format 1: drop what only training used
        state = {k: v for k, v in state.items() if not k.startswith(_LEGACY_TRAINING_TENSORS)}
    return cfg, state, json.loads(meta.get("info", "{}"))


def load_generator(path=None, device="cpu", inference: bool = True) -> Generator:
    """A Generator from a file written by ``save_weights`` (default: the bundled weights), ready
    for inference on ``device`` (``prepare_for_inference``). ``inference=False``: float32
    throughout on ``device``, as training holds it. ``model.weights_info`` is its record."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.exists():
        if path == DEFAULT_WEIGHTS:
            raise MissingDependencyError(
                f"trained generator weights not found at {path}; they are produced by "
                "`dystream train generator` (docs/training.md) — pass --weights PATH to use your own")
        raise InputError(f"generator weights not found: {path}")
    cfg, state, info = read_weights(path)
    model = Generator(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"{path} does not match the generator (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.weights_info = info
    return prepare_for_inference(model, device) if inference else model.to(device).eval()
