"""Offline generation: whole clips through the one frame step of :mod:`dystream.generator.sampling`.

Each clip's audio is encoded in one call per encoder (the same module a streaming
step runs one frame at a time), then the clips are rolled out together, one
``FrameStep.sample`` per frame; a clip leaves the batch when it ends.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch

from dystream.errors import InputError
from dystream.generator.model import Generator
from dystream.generator.sampling import FrameStep, Sampling


@contextmanager
def cpu_threads(device, threads: int | None) -> Iterator[None]:
    """torch's CPU thread count set to ``threads`` inside (on a CPU device; None: unchanged).

    Batch-1 frame steps are small matmuls: handing them to a second thread costs more than
    it saves (measured: several times slower on a busy 2-core CPU)."""
    if threads is None or torch.device(device).type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def as_audio(audio, name: str) -> np.ndarray:
    """A mono float32 track, or a clear error."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise InputError(f"{name} must be mono [samples], got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise InputError(f"{name} contains NaN or infinite samples")
    return audio


def clip_frames(model: Generator, self_audio: np.ndarray) -> int:
    """Frames of a clip: every whole frame of the self track."""
    cfg = model.cfg
    frames = len(self_audio) // cfg.samples_per_frame
    if frames == 0:
        raise InputError(f"self audio is too short: {len(self_audio)} samples, at least {cfg.samples_per_frame} "
                         f"(one frame of {1000 // cfg.frames_per_second} ms) needed")
    return frames


def encode_clip(model: Generator, self_audio: np.ndarray, other_audio: np.ndarray, frames: int):
    """Both streams' features [1, T, A] of a clip: silence before it (the encoders' initial
    state and the front's left context) and after it (the lookahead of the last frames)."""
    cfg, out = model.cfg, []
    for encoder, audio in zip(model.encoders, (self_audio, other_audio)):
        need = encoder.samples_needed(frames)
        buffer = np.zeros(need, dtype=np.float32)
        usable = min(len(audio), need - cfg.front_left_samples)
        buffer[cfg.front_left_samples: cfg.front_left_samples + usable] = audio[:usable]
        features, _ = encoder(torch.from_numpy(buffer)[None].to(model.device), frames)
        out.append(features)
    return out


def generate_motion(model: Generator, self_audio, other_audio, anchor, *, seed: int = 0,
                    sampling: Sampling = Sampling()) -> np.ndarray:
    """Motion [T, D] of one clip, T = len(self_audio) // samples_per_frame; see ``generate_motions``."""
    return generate_motions(model, [(self_audio, other_audio, anchor, seed)], sampling=sampling)[0]


def generate_motions(model: Generator, items, *, sampling: Sampling = Sampling(), batch_size: int | None = None,
                     threads: int | None = 1) -> list[np.ndarray]:
    """Motion for many clips: ``items`` are (self_audio, other_audio, anchor, seed).

    Returns one array [T_i, D] per item, in order, T_i = len(self_audio_i) // samples per
    frame. ``other_audio`` None is a silent partner; a shorter partner track is padded with
    silence, a longer one cut to the self track. Clips are sorted by length and rolled out
    at most ``batch_size`` at a time (all at once when None; chunks of equal size). The
    model runs where it is (``model.device``); ``threads``: torch's CPU threads meanwhile
    (1 is fastest for small batches; None leaves the setting alone).
    """
    items = list(items)
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    clips = []
    for k, item in enumerate(items):
        try:
            self_audio, other_audio, anchor, seed = item
        except (TypeError, ValueError):
            raise InputError(f"item {k} must be (self_audio, other_audio, anchor, seed)") from None
        self_audio = as_audio(self_audio, f"self audio of item {k}")
        other_audio = np.zeros(0, np.float32) if other_audio is None else as_audio(other_audio, f"other audio of item {k}")
        anchor = np.asarray(anchor, dtype=np.float32)
        if anchor.shape != (model.cfg.motion_dim,):
            raise InputError(f"anchor of item {k} must have {model.cfg.motion_dim} values, got {anchor.shape}")
        clips.append((self_audio, other_audio, anchor, int(seed), clip_frames(model, self_audio)))
    if not clips:
        return []
    order = sorted(range(len(clips)), key=lambda k: -clips[k][4])  # longest first
    # Chunks of equal size (66 items at batch_size 64: 33 + 33, not 64 + 2): a small last
    # chunk would run its frames at a fraction of the batched throughput.
    size = len(clips) if batch_size is None else int(batch_size)
    chunks = -(-len(clips) // size)
    size = -(-len(clips) // chunks)
    results: list[np.ndarray | None] = [None] * len(clips)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), size):
                chunk = order[start: start + size]
                motions = _roll_out(model, [clips[k] for k in chunk], sampling, threads)
                for k, motion in zip(chunk, motions):
                    results[k] = motion
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def _roll_out(model: Generator, clips: Sequence[tuple], sampling: Sampling, threads: int | None) -> list[np.ndarray]:
    """Clips sorted longest first -> their motion; the batch shrinks as clips end."""
    lengths = [c[4] for c in clips]
    longest = lengths[0]
    features = [[], []]
    for self_audio, other_audio, _, _, frames in clips:
        for stream, f in enumerate(encode_clip(model, self_audio, other_audio, frames)):
            features[stream].append(torch.nn.functional.pad(f[0], (0, 0, 0, longest - frames)))
    self_features, other_features = (torch.stack(f) for f in features)  # [B, T, A]
    with cpu_threads(model.device, threads):
        step = FrameStep(model, np.stack([c[2] for c in clips]), [c[3] for c in clips], sampling)
        out = torch.zeros(len(clips), longest, model.cfg.motion_dim, device=model.device, dtype=model.dtype)
        active = len(clips)
        for t in range(longest):
            if lengths[active - 1] <= t:  # sorted: the clips that have ended are at the end
                while lengths[active - 1] <= t:
                    active -= 1
                step.keep(range(active))
            out[:active, t] = step.sample(self_features[:active, t], other_features[:active, t])
    out = out.float().cpu().numpy()
    return [out[b, :n] for b, n in enumerate(lengths)]
