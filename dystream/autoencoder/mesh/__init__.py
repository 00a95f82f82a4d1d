"""The training-free mesh autoencoder: MediaPipe landmarks in, a calibrated warp of the photo out."""

from __future__ import annotations

import numpy as np
import torch

from dystream.autoencoder.mesh.decoder import MeshAppearance, MeshDecoder
from dystream.autoencoder.mesh.encoder import MeshEncoder
from dystream.errors import InputError
from dystream.motion import MOTION_DIM


class MeshAutoencoder:
    """Autoencoder protocol implementation (see dystream.autoencoder.base)."""

    name = "mesh"

    def __init__(self, resolution: int = 256, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, paste_back: bool = False):
        if resolution not in (256, 512):
            raise InputError(f"mesh autoencoder renders 256 or 512 pixels, not {resolution}")
        self.resolution = resolution
        self.device = torch.device(device)
        self.dtype = dtype
        self.paste_back = paste_back
        self.encoder = MeshEncoder(resolution, self.device, dtype)
        self.decoder = MeshDecoder()

    def encode(self, image: np.ndarray) -> tuple[MeshAppearance, np.ndarray]:
        return self.encoder.encode(image, keep_photo=True)

    @torch.inference_mode()
    def decode(self, appearance: MeshAppearance | list[MeshAppearance], motion: torch.Tensor | np.ndarray,
               paste_back: bool | None = None) -> torch.Tensor | list[torch.Tensor]:
        """Frames uint8 [T, S, S, 3] for one appearance and motion [T, D]; [B, T, S, S, 3]
        for a list of B appearances and motion [B, T, D]. With paste-back the frames are
        the full photos (a list when the photos differ in size)."""
        paste = self.paste_back if paste_back is None else paste_back
        motion = torch.as_tensor(motion, dtype=self.dtype, device=self.device)
        if motion.shape[-1] != MOTION_DIM:
            raise InputError(f"motion must end in {MOTION_DIM} channels, got shape {tuple(motion.shape)}")
        if isinstance(appearance, (list, tuple)):
            if motion.ndim != 3 or motion.shape[0] != len(appearance):
                raise InputError(f"{len(appearance)} appearances need motion [{len(appearance)}, T, {MOTION_DIM}],"
                                 f" got {tuple(motion.shape)}")
            outs = [self._frames(a, m, paste) for a, m in zip(appearance, motion)]
            if len({tuple(o.shape) for o in outs}) == 1:
                return torch.stack(outs)
            return outs
        if motion.ndim == 1:
            motion = motion[None]
        if motion.ndim != 2:
            raise InputError(f"motion for one appearance must be [T, {MOTION_DIM}], got {tuple(motion.shape)}")
        return self._frames(appearance, motion, paste)

    def _frames(self, appearance: MeshAppearance, motion: torch.Tensor, paste: bool) -> torch.Tensor:
        if paste and appearance.paste is not None:
            return appearance.paste.to_uint8(self.decoder.render(appearance, motion))
        out = self.decoder.render(appearance, motion, paste_back=paste)
        return out.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
