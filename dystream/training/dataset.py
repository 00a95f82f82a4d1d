"""Training windows cut from a split of conversation shards, held in memory.

The whole split is loaded once: audio as int16 (half the memory of float32, and
exact for the 16-bit FLAC the shards store), motion as float32. Both live on the
training device, so a batch is made by index arithmetic and one gather — no
DataLoader, no workers, no host round trip.

Layout in memory
----------------
* ``motion``  [2, total_frames, D]: every conversation's frames, back to back.
* ``phones``  [2, total_frames] int8: the phone class (``PHONE_CLASSES``) at each
  frame's centre, -1 where a party has no phone labels (shards from real video).
* ``audio``   [2, total_samples] int16: every conversation's audio cut to exactly
  ``frames * 640`` samples, with ``left`` zeros before and ``right`` zeros after
  it, so a window at the start or end of a conversation reads silence outside
  the conversation instead of its neighbour.
* ``window_frame_start`` / ``window_audio_start`` [num_windows]: for every valid
  window start (t0 in [0, frames - W]) of every conversation, the index of frame
  t0 in ``motion`` and of its first sample in ``audio``.

Each window gives two samples: party A as "self" (its motion is the target, B is
"other") and the reverse. A batch draws (window, direction) pairs uniformly.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dystream.config import FRAMES_PER_SECOND, SAMPLES_PER_FRAME
from dystream.data.behaviour import PHONES, normalise_phone
from dystream.data.schema import Conversation, read_shard, shard_paths
from dystream.errors import InputError
from dystream.training.recipe import PHONE_CLASS_COUNT
from dystream.motion import MOTION_DIM

log = logging.getLogger(__name__)

ANCHOR_STRATEGIES = ("none", "random", "last-weighted")
# last-weighted: the anchor is one of the window's last frames, newer ones likelier.
LAST_WEIGHTED_FRAMES = 10

INT16_SCALE = 32768.0

# Classes of the generator's phone probe (GeneratorConfig.phone_weight): ARPAbet and "pau".
PHONE_CLASSES = tuple(sorted(PHONES))
NO_PHONE = -1
if len(PHONE_CLASSES) != PHONE_CLASS_COUNT:   # the model sizes its probe by the constant
    raise RuntimeError(f"generator.config.PHONE_CLASS_COUNT is {PHONE_CLASS_COUNT}; the phone set has {len(PHONE_CLASSES)}")
_PHONE_CLASS = {p: i for i, p in enumerate(PHONE_CLASSES)}


def frame_phone_classes(phones, num_frames: int) -> np.ndarray:
    """int8 [num_frames]: the class of the phone spoken at each frame's centre, "pau"
    where no phone is; all -1 (unknown) when the party has no phone labels, and -1 for
    a phone outside ARPAbet."""
    classes = np.full(num_frames, NO_PHONE, np.int8)
    if not phones:
        return classes
    classes[:] = _PHONE_CLASS["pau"]
    for phone, start, end in phones:
        try:
            cls = _PHONE_CLASS[normalise_phone(phone)]
        except InputError:
            cls = NO_PHONE
        # frame k's centre (k + 0.5) / fps lies in [start, end)
        first = max(math.ceil(float(start) * FRAMES_PER_SECOND - 0.5), 0)
        stop = min(math.ceil(float(end) * FRAMES_PER_SECOND - 0.5), num_frames)
        if stop > first:
            classes[first:stop] = cls
    return classes


@dataclass
class WindowBatch:
    """One training batch, every tensor on the bank's device."""

    self_audio: torch.Tensor   # float32 [B, left + W*640 + right]
    other_audio: torch.Tensor  # float32 [B, left + W*640 + right]
    motion: torch.Tensor       # float32 [B, W, D] (the self party's motion)
    anchor: torch.Tensor       # float32 [B, D]
    anchor_keep: torch.Tensor  # bool [B]
    phones: torch.Tensor | None = None  # int64 [B, W]: self party's phone class per frame, -1 unknown
    voices: torch.Tensor | None = None  # int64 [B]: the self party's voice (index into the bank's voice list)


def load_conversations(root: str | Path, split: str, threads: int = 8) -> list[Conversation]:
    """Every conversation of a split, shards decoded in parallel (FLAC decoding releases the GIL)."""
    root = Path(root)
    try:
        paths = shard_paths(root, split)
    except FileNotFoundError as exc:
        raise InputError(f"{exc}; make data with `dystream data synth --hours H -o DIR`") from exc
    if not paths:
        raise InputError(f"no shards in {root / split}; make data with `dystream data synth --hours H -o {root}`")
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(paths)))) as pool:
        shards = list(pool.map(read_shard, paths))
    return [conv for shard in shards for conv in shard]


def motion_statistics(conversations: list[Conversation], min_std: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over both parties of every frame (float64 sums, float32 out).

    ``min_std`` keeps channels that never move (e.g. a constant in synthetic data)
    from blowing up when the model divides by the std.
    """
    frames = (conv.motion.reshape(-1, MOTION_DIM) for conv in conversations)
    return _mean_std(frames, min_std, "no motion frames to compute statistics from")


def _mean_std(blocks, min_std: float, empty_message: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (floored at ``min_std``) over blocks of frames [N, D],
    from float64 sums and sums of squares (no copy of all frames at once)."""
    count = 0
    total = np.zeros(MOTION_DIM, np.float64)
    total_sq = np.zeros(MOTION_DIM, np.float64)
    for block in blocks:
        block = np.asarray(block, np.float64)
        count += block.shape[0]
        total += block.sum(0)
        total_sq += np.square(block).sum(0)
    if count == 0:
        raise InputError(empty_message)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, min_std).astype(np.float32)


def relative_motion_statistics(bank: "WindowBank", relative_mask: np.ndarray, anchor_strategy: str,
                               mean: np.ndarray, std: np.ndarray, batches: int = 16, batch_size: int = 256,
                               seed: int = 0, min_std: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """``mean``/``std`` with the ``relative_mask`` channels replaced by the statistics of
    motion minus its window's anchor (the anchors the trainer draws), from sampled windows."""
    generator = torch.Generator(device=bank.device).manual_seed(seed)

    def relative_blocks():
        for _ in range(batches):
            window, party = bank.draw(batch_size, generator)
            motion = bank.gather_motion(window, party)
            anchor, _ = choose_anchor(motion, anchor_strategy, generator)
            yield (motion.double() - anchor[:, None].double()).reshape(-1, MOTION_DIM).cpu().numpy()

    rel_mean, rel_std = _mean_std(relative_blocks(), min_std, "no windows to compute statistics from")
    mask = np.asarray(relative_mask, dtype=bool)
    return np.where(mask, rel_mean, mean).astype(np.float32), np.where(mask, rel_std, std).astype(np.float32)


class WindowBank:
    """All windows of one split, ready to be gathered into batches on ``device``."""

    def __init__(self, conversations: list[Conversation], window_frames: int,
                 audio_left: int, audio_right: int, device: torch.device | str = "cpu"):
        if window_frames < 1:
            raise InputError(f"window_frames must be >= 1, got {window_frames}")
        if audio_left < 0 or audio_right < 0:
            raise InputError(f"audio context must be >= 0 samples, got ({audio_left}, {audio_right})")
        self.window_frames = window_frames
        self.audio_left = audio_left
        self.audio_right = audio_right
        self.device = torch.device(device)

        usable = [c for c in conversations if c.num_frames >= window_frames]
        skipped = len(conversations) - len(usable)
        if skipped:
            log.warning("skipping %d conversation(s) shorter than one window of %d frames", skipped, window_frames)
        if not usable:
            raise InputError(f"no conversation has at least {window_frames} frames "
                             f"({window_frames / FRAMES_PER_SECOND:.2f} s); generate longer conversations")

        motion_parts, phone_parts, voice_parts, audio_parts, frame_starts, audio_starts = [], [], [], [], [], []
        frame_offset = audio_offset = 0
        # Voices of the bank, sorted: a party's voice is its index here (the voice adversary's class).
        self.voice_names = sorted({v for c in usable for v in c.voices})
        voice_index = {name: i for i, name in enumerate(self.voice_names)}
        for conv in usable:
            frames = conv.num_frames
            samples = frames * SAMPLES_PER_FRAME
            audio = np.zeros((2, audio_left + samples + audio_right), np.int16)
            clip = conv.audio[:, :samples]
            audio[:, audio_left:audio_left + clip.shape[1]] = _to_int16(clip)
            audio_parts.append(audio)
            motion_parts.append(np.asarray(conv.motion, np.float32))
            phone_parts.append(np.stack([frame_phone_classes(conv.labels[p].phones if p < len(conv.labels) else [],
                                                             frames) for p in range(2)]))
            voice_parts.append(np.repeat(np.array([[voice_index[v]] for v in conv.voices], np.int16), frames, axis=1))
            t0 = np.arange(frames - window_frames + 1, dtype=np.int64)
            frame_starts.append(frame_offset + t0)
            audio_starts.append(audio_offset + audio_left + t0 * SAMPLES_PER_FRAME)
            frame_offset += frames
            audio_offset += audio.shape[1]

        self.num_conversations = len(usable)
        self.hours = sum(c.num_frames for c in usable) / FRAMES_PER_SECOND / 3600
        self.motion = torch.from_numpy(np.concatenate(motion_parts, axis=1)).to(self.device)
        self.phones = torch.from_numpy(np.concatenate(phone_parts, axis=1)).to(self.device)
        self.voices = torch.from_numpy(np.concatenate(voice_parts, axis=1)).to(self.device)  # [2, frames]
        self.audio = torch.from_numpy(np.concatenate(audio_parts, axis=1)).to(self.device)
        self.window_frame_start = torch.from_numpy(np.concatenate(frame_starts)).to(self.device)
        self.window_audio_start = torch.from_numpy(np.concatenate(audio_starts)).to(self.device)
        self._frame_offsets = torch.arange(window_frames, device=self.device)
        self._sample_offsets = torch.arange(
            -audio_left, window_frames * SAMPLES_PER_FRAME + audio_right, device=self.device)

    @property
    def num_windows(self) -> int:
        return int(self.window_frame_start.numel())

    @property
    def audio_samples_per_window(self) -> int:
        return self.audio_left + self.window_frames * SAMPLES_PER_FRAME + self.audio_right

    def _frames(self, window: torch.Tensor) -> torch.Tensor:
        """Indices [B, W] into the frame axis of ``motion`` / ``phones`` of windows (indices)."""
        return self.window_frame_start[window, None] + self._frame_offsets

    def gather_motion(self, window: torch.Tensor, self_party: torch.Tensor) -> torch.Tensor:
        """The self party's motion [B, W, D] of windows (indices) and self parties (0 = A, 1 = B)."""
        return self.motion[self_party[:, None], self._frames(window)]

    def gather_phones(self, window: torch.Tensor, self_party: torch.Tensor) -> torch.Tensor:
        """The self party's phone classes [B, W] (int64, -1 unknown)."""
        return self.phones[self_party[:, None], self._frames(window)].long()

    def gather_voices(self, window: torch.Tensor, self_party: torch.Tensor) -> torch.Tensor:
        """The self party's voice index [B] (int64; into ``voice_names``)."""
        return self.voices[self_party, self.window_frame_start[window]].long()

    def gather(self, window: torch.Tensor, self_party: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(self_audio, other_audio, motion) for window indices and self-party indices (0 = A, 1 = B)."""
        samples = self.window_audio_start[window, None] + self._sample_offsets
        party = self_party[:, None]
        self_audio = self.audio[party, samples].float() / INT16_SCALE
        other_audio = self.audio[1 - party, samples].float() / INT16_SCALE
        return self_audio, other_audio, self.gather_motion(window, self_party)

    def draw(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random (window indices, self parties) from ``generator``."""
        window = torch.randint(self.num_windows, (batch_size,), generator=generator, device=self.device)
        self_party = torch.randint(2, (batch_size,), generator=generator, device=self.device)
        return window, self_party

    def sample(self, batch_size: int, generator: torch.Generator, anchor_strategy: str = "last-weighted") -> WindowBatch:
        """A random batch; every draw comes from ``generator`` (on the bank's device), nothing else."""
        window, self_party = self.draw(batch_size, generator)
        self_audio, other_audio, motion = self.gather(window, self_party)
        anchor, keep = choose_anchor(motion, anchor_strategy, generator)
        return WindowBatch(self_audio, other_audio, motion, anchor, keep, self.gather_phones(window, self_party),
                           self.gather_voices(window, self_party))


def choose_anchor(motion: torch.Tensor, strategy: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The anchor frame [B, D] and whether it is given [B] for windows of motion [B, W, D].

    * ``none``: no anchor (keep=False) — the model learns without one. The frame is
      still drawn as for ``last-weighted``: a ``pose_relative`` model measures the
      pose from it even when it does not see it.
    * ``random``: a ground-truth frame drawn uniformly from the whole window.
    * ``last-weighted``: one of the last 10 frames, frame W-1-k with weight
      proportional to 10-k — at inference the anchor is the reference pose the
      stream should keep returning to, so it should look like recent motion.
    Condition dropout for guidance happens inside the model, not here.
    """
    batch, window, _ = motion.shape
    rows = torch.arange(batch, device=motion.device)
    if strategy == "random":
        position = torch.randint(window, (batch,), generator=generator, device=motion.device)
    elif strategy in ("last-weighted", "none"):
        span = min(LAST_WEIGHTED_FRAMES, window)
        weights = torch.arange(1, span + 1, dtype=torch.float32, device=motion.device).expand(batch, span)
        position = window - span + torch.multinomial(weights, 1, generator=generator).squeeze(1)
    else:
        raise InputError(f"unknown anchor strategy {strategy!r}; choose one of {', '.join(ANCHOR_STRATEGIES)}")
    keep = torch.full((batch,), strategy != "none", dtype=torch.bool, device=motion.device)
    return motion[rows, position], keep


def _to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(audio, np.float32) * INT16_SCALE), -32768, 32767).astype(np.int16)
