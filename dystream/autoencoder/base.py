"""What every autoencoder offers: photo -> (appearance, m0), and (appearance, motion) -> frames.

Motion is the identity-agnostic layout of :mod:`dystream.motion`. The mesh backend
works on any photo without training; a learned backend must fit the same protocol.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from dystream.errors import InputError


@runtime_checkable
class Autoencoder(Protocol):
    resolution: int

    def encode(self, image: np.ndarray) -> tuple[Any, np.ndarray]:
        """image HxWx3 uint8 RGB -> (appearance, m0 [MOTION_DIM])."""

    def decode(self, appearance: Any, motion: torch.Tensor) -> torch.Tensor:
        """motion [T, D] (or [B, T, D] with a list of B appearances) -> uint8 frames [.., H, W, 3]."""


def load_autoencoder(name: str = "mesh", resolution: int = 256, device: torch.device | str = "cpu",
                     **options: Any) -> Autoencoder:
    """The autoencoder backend by name ("mesh": training-free, needs ``dystream[face]``)."""
    if name == "mesh":
        from dystream.autoencoder.mesh import MeshAutoencoder

        return MeshAutoencoder(resolution=resolution, device=device, **options)
    raise InputError(f"unknown autoencoder {name!r}; available: mesh")
