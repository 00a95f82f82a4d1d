"""The training-free mesh autoencoder: MediaPipe landmarks in, a calibrated warp of the photo out."""

from __future__ import annotations

import numpy as np
import torch

from dystream.autoencoder.mesh.decoder import AppearanceBatch, MeshAppearance, MeshDecoder
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
    def decode(self, appearance: MeshAppearance | list[MeshAppearance] | AppearanceBatch,
               motion: torch.Tensor | np.ndarray, paste_back: bool | None = None) -> torch.Tensor | list[torch.Tensor]:
        """Frames uint8 [T, S, S, 3] for one appearance and motion [T, D]; [B, T, S, S, 3]
        for a list of B appearances (or an :class:`AppearanceBatch`) and motion [B, T, D].
        With paste-back the frames are the full photos (a list when the photos differ in size).

        A list is rendered in one batched pass (:meth:`MeshDecoder.render_batch`) when its
        appearances share resolution, device and dtype, else photo by photo. A list is
        stacked on every call; a caller that decodes the same photos again and again (a
        streaming engine) stacks them once with ``AppearanceBatch.stack`` and passes that.
        """
        paste = self.paste_back if paste_back is None else paste_back
        motion = torch.as_tensor(motion, dtype=self.dtype, device=self.device)
        if motion.shape[-1] != MOTION_DIM:
            raise InputError(f"motion must end in {MOTION_DIM} channels, got shape {tuple(motion.shape)}")
        if isinstance(appearance, (list, tuple, AppearanceBatch)):
            if motion.ndim != 3 or motion.shape[0] != len(appearance):
                raise InputError(f"{len(appearance)} appearances need motion [{len(appearance)}, T, {MOTION_DIM}],"
                                 f" got {tuple(motion.shape)}")
            if isinstance(appearance, AppearanceBatch):
                return self._batch_frames(appearance, motion, paste)
            if AppearanceBatch.mismatch(list(appearance)) is None:
                return self._batch_frames(AppearanceBatch.stack(appearance), motion, paste)
            return _stack_if_same([self._frames(a, m, paste) for a, m in zip(appearance, motion)])
        if motion.ndim == 1:
            motion = motion[None]
        if motion.ndim != 2:
            raise InputError(f"motion for one appearance must be [T, {MOTION_DIM}], got {tuple(motion.shape)}")
        return self._frames(appearance, motion, paste)

    def _frames(self, appearance: MeshAppearance, motion: torch.Tensor, paste: bool) -> torch.Tensor:
        if paste and appearance.paste is not None:
            return appearance.paste.to_uint8(self.decoder.render(appearance, motion))
        out = self.decoder.render(appearance, motion, paste_back=paste)
        return _to_bytes(out)

    def _batch_frames(self, batch: AppearanceBatch, motion: torch.Tensor, paste: bool
                      ) -> torch.Tensor | list[torch.Tensor]:
        """One batched render of motion [B, T, D]; the paste-back batched too when the
        photos share a size, else photo by photo."""
        crops = self.decoder.render_batch(batch, motion)                    # [B, T, 3, S, S]
        if not paste:
            return _to_bytes(crops)
        pasting = batch.paste_batch()
        if pasting is not None:
            return pasting.to_uint8(crops)
        return _stack_if_same([a.paste.to_uint8(c) for a, c in zip(batch.appearances, crops)])


def _to_bytes(frames: torch.Tensor) -> torch.Tensor:
    """Float frames [..., 3, S, S] -> uint8 [..., S, S, 3]."""
    return frames.clamp(0, 255).round().to(torch.uint8).movedim(-3, -1).contiguous()


def _stack_if_same(outs: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    return torch.stack(outs) if len({tuple(o.shape) for o in outs}) == 1 else outs
