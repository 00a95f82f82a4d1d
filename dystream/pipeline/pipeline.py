"""The one path from a photo and two audio streams to frames.

    photo ─► autoencoder.encode ─► appearance + m0 ─► anchor (m0 fitted to the model's range)
    self / other audio ─► generator (one frame step per frame) ─► motion ─► retarget onto m0
    appearance + motion ─► autoencoder.decode ─► frames

``Pipeline`` holds the models; ``Avatar`` is a photo prepared once (encoded, its
anchor chosen). Offline generation (``generate`` + ``render``) and streaming
(``session``) run the same pieces; ``dystream generate``, ``dystream demo`` and the
server are thin layers over it. Nothing here reads or writes files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from dystream.errors import InputError
from dystream.generator.model import Generator
from dystream.generator.offline import generate_motions
from dystream.generator.sampling import Sampling
from dystream.pipeline.retarget import photo_anchor, to_photo

# Frames decoded per call when rendering a clip: bounded memory for long clips.
RENDER_BATCH = 50


@dataclass(frozen=True)
class Avatar:
    """A photo prepared for one pipeline: its appearance (the autoencoder's), its own motion m0,
    and the anchor the generator starts from (m0 fitted into the model's training range)."""

    appearance: Any
    photo_motion: np.ndarray
    anchor: np.ndarray

    def on_photo(self, motion) -> np.ndarray:
        """Generated motion [..., D] moved onto the photo: m0 + (motion - anchor), clamped."""
        return to_photo(motion, self.anchor, self.photo_motion)


class Pipeline:
    """Generator + autoencoder + how frames are sampled.

    ``model`` is a :class:`Generator` ready for inference (``load_generator``);
    ``autoencoder`` any :class:`dystream.autoencoder.Autoencoder` (None: motion only)."""

    def __init__(self, model: Generator, autoencoder=None, sampling: Sampling = Sampling()) -> None:
        self.model, self.autoencoder, self.sampling = model, autoencoder, sampling

    @classmethod
    def load(cls, weights=None, *, device="cpu", resolution: int = 256, sampling: Sampling = Sampling(),
             render: bool = True) -> "Pipeline":
        """The generator from ``weights`` (default: the bundled ones) and the mesh autoencoder at
        ``resolution`` on ``device`` (``render=False``: no autoencoder)."""
        from dystream.generator.weights import load_generator

        device = _checked_device(device)
        model = load_generator(weights, device)
        autoencoder = None
        if render:
            from dystream.autoencoder import load_autoencoder

            autoencoder = load_autoencoder("mesh", resolution=resolution, device=device)
        return cls(model, autoencoder, sampling)

    @property
    def samples_per_frame(self) -> int:
        return self.model.cfg.samples_per_frame

    # -- the photo ---------------------------------------------------------
    def prepare(self, photo: np.ndarray) -> Avatar:
        """Encode a photo (HxWx3 uint8 RGB) once: appearance, m0 and the generator's anchor."""
        if self.autoencoder is None:
            raise InputError("this pipeline has no autoencoder to read a photo with; use Pipeline.load(render=True)")
        appearance, m0 = self.autoencoder.encode(photo)
        return self.avatar(m0, appearance)

    def avatar(self, photo_motion, appearance=None) -> Avatar:
        """An Avatar from a photo's motion m0 alone (and an appearance, if it is to be rendered)."""
        m0 = np.asarray(photo_motion, np.float32)
        return Avatar(appearance, m0, photo_anchor(self.model, m0))

    # -- offline -----------------------------------------------------------
    def generate(self, avatar: Avatar, self_audio, other_audio=None, *, seed: int = 0) -> np.ndarray:
        """Motion on the photo [T, D] for a whole clip (T = the self audio's whole frames):
        the photo's own expression plus the generated movement."""
        return self.generate_many([(avatar, self_audio, other_audio, seed)])[0]

    def generate_many(self, items, *, batch_size: int | None = None) -> list[np.ndarray]:
        """``generate`` for many (avatar, self_audio, other_audio, seed) at once (one batched rollout)."""
        items = list(items)
        motions = generate_motions(self.model, [(a, b, avatar.anchor, seed) for avatar, a, b, seed in items],
                                   sampling=self.sampling, batch_size=batch_size)
        return [avatar.on_photo(m) for (avatar, *_), m in zip(items, motions)]

    def render(self, avatar: Avatar, motion: np.ndarray, *, paste_back: bool = False,
               chunk: int = RENDER_BATCH) -> Iterator[np.ndarray]:
        """Frames (uint8 HxWx3) of motion on the photo [T, D], decoded ``chunk`` at a time."""
        if self.autoencoder is None or avatar.appearance is None:
            raise InputError("rendering needs an autoencoder and an avatar prepared from a photo")
        return render_frames(self.autoencoder, avatar.appearance, motion, paste_back=paste_back, chunk=chunk)

    # -- streaming ---------------------------------------------------------
    def session(self, avatar: Avatar, *, seed: int = 0, render: bool = True):
        """A :class:`dystream.streaming.StreamingSession` for this avatar (frames carry images
        when ``render`` and the pipeline has an autoencoder)."""
        from dystream.streaming import StreamingSession

        renderer = None
        if render and self.autoencoder is not None and avatar.appearance is not None:
            def renderer(motion: np.ndarray) -> np.ndarray:
                return self.autoencoder.decode(avatar.appearance, torch.from_numpy(motion)).cpu().numpy()
        return StreamingSession(self.model, avatar.anchor, seed=seed, sampling=self.sampling,
                                to_photo=avatar.on_photo, render=renderer)


def render_frames(autoencoder, appearance, motion: np.ndarray, *, paste_back: bool = False,
                  chunk: int = RENDER_BATCH) -> Iterator[np.ndarray]:
    """Frames (uint8 HxWx3) of motion [T, D] on an appearance, decoded ``chunk`` at a time."""
    values = torch.from_numpy(np.ascontiguousarray(motion, dtype=np.float32))
    for start in range(0, len(values), chunk):
        yield from autoencoder.decode(appearance, values[start: start + chunk], paste_back=paste_back).cpu().numpy()


def _checked_device(device) -> torch.device:
    """A torch device that exists here, or a clear error."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r} ({exc}); use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}, but this torch sees no CUDA device (a CPU-only build, or no GPU); "
                         "use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"device {device} is not supported; use cpu or cuda")
    return device
