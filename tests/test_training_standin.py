"""A tiny objective with the trainer's contract, tiny datasets, and the training tests' CLI options.

The stand-in follows the objective contract of docs/CONTRACTS.md ("Training"):
``objective(batch, generator) -> (loss, stats)`` (noise from the given generator,
dropout from the global RNG — both must be reproduced exactly on resume),
``adversary_parameters()``, ``network``, ``audio_context()``, ``window_frames``. It
checks the shapes it receives, so a window cut with the wrong audio context fails
loudly. Under ``DYSTREAM_TEST_SAVE_LOG`` it records which rank saved checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dystream.config import SAMPLE_RATE, SAMPLES_PER_FRAME
from dystream.data.schema import Conversation, PartyLabels, write_shard
from dystream.motion import MOTION_DIM, REST


# A tiny real generator for the command line (`--model-option`s over the small preset).
TINY = {"n_mels": 16, "audio_width": 16, "audio_layers": 1, "width": 16, "layers": 1, "heads": 2,
        "head_width": 16, "head_blocks": 1, "window": 12, "front_warps": "[]"}
TINY_OPTIONS = [arg for name, value in TINY.items() for arg in ("--model-option", f"{name}={value}")]


@dataclass(frozen=True)
class StandInConfig:
    window: int = 12                # frames per training window
    hidden: int = 16
    history_samples: int = 640      # audio before the first frame the model asks for
    self_lookahead_ms: int = 40
    other_lookahead_ms: int = 20
    dropout: float = 0.1
    pose_relative: bool = False     # as GeneratorConfig: the CLI asks for relative pose statistics


class StandInGenerator(nn.Module):
    def __init__(self, cfg: StandInConfig):
        super().__init__()
        self.cfg = cfg
        self.self_audio = nn.Linear(SAMPLES_PER_FRAME, cfg.hidden)
        self.other_audio = nn.Linear(SAMPLES_PER_FRAME, cfg.hidden)
        self.anchor_in = nn.Linear(MOTION_DIM, cfg.hidden)
        self.motion_in = nn.Linear(MOTION_DIM + 1, cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, MOTION_DIM)
        self.register_buffer("motion_mean", torch.zeros(MOTION_DIM))
        self.register_buffer("motion_std", torch.ones(MOTION_DIM))

    @property
    def network(self) -> nn.Module:
        return self

    @property
    def window_frames(self) -> int:
        return self.cfg.window

    def adversary_parameters(self) -> list:
        return []

    def audio_context(self) -> tuple[int, int]:
        lookahead_ms = max(self.cfg.self_lookahead_ms, self.cfg.other_lookahead_ms)
        return self.cfg.history_samples, lookahead_ms * SAMPLE_RATE // 1000

    def set_motion_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.motion_mean.copy_(torch.as_tensor(mean))
        self.motion_std.copy_(torch.as_tensor(std))

    def forward(self, batch, generator=None):
        self_audio, other_audio, motion = batch.self_audio, batch.other_audio, batch.motion
        anchor, anchor_keep = batch.anchor, batch.anchor_keep
        batch, frames, dim = motion.shape
        left, right = self.audio_context()
        expected = (batch, left + frames * SAMPLES_PER_FRAME + right)
        assert self_audio.shape == expected and other_audio.shape == expected, (self_audio.shape, expected)
        assert anchor.shape == (batch, dim) and anchor_keep.shape == (batch,) and anchor_keep.dtype == torch.bool

        def frames_of(audio):
            return audio[:, left:left + frames * SAMPLES_PER_FRAME].reshape(batch, frames, SAMPLES_PER_FRAME)

        x0 = (motion - self.motion_mean) / self.motion_std
        sigma = torch.rand(batch, 1, 1, generator=generator, device=motion.device)
        noise = torch.randn(x0.shape, generator=generator, device=motion.device)
        noisy = (1 - sigma) * x0 + sigma * noise
        anchor_norm = (anchor - self.motion_mean) / self.motion_std * anchor_keep[:, None]
        hidden = (self.self_audio(frames_of(self_audio)) + self.other_audio(frames_of(other_audio))
                  + self.anchor_in(anchor_norm)[:, None]
                  + self.motion_in(torch.cat([noisy, sigma.expand(batch, frames, 1)], -1)))
        x0_hat = self.out(self.dropout(torch.nn.functional.gelu(hidden)))
        loss = torch.mean((x0_hat.float() - x0) ** 2)
        return loss, {"sigma_mean": sigma.mean().detach()}


def _record_saving_rank() -> None:
    """Under DYSTREAM_TEST_SAVE_LOG=DIR, every checkpoint save appends this process's rank to a file."""
    log_dir = os.environ.get("DYSTREAM_TEST_SAVE_LOG")
    if not log_dir:
        return
    import dystream.training.trainer as trainer_module

    original = trainer_module.save_checkpoint

    def recording_save(path, state):
        with open(Path(log_dir) / f"saves-rank{os.environ.get('RANK', '0')}.txt", "a") as f:
            f.write(f"{state['step']}\n")
        return original(path, state)

    trainer_module.save_checkpoint = recording_save


_record_saving_rank()


# -- tiny datasets --------------------------------------------------------------------------------

def _phones_of(voiced: np.ndarray) -> list[list]:
    """Phone labels [phone, start, end] for frames: a few phones in turn where the tone
    sounds (changing every 3 frames), "pau" where it does not."""
    names = ("m", "aa", "s", "iy")
    per_frame = [names[(k // 3) % len(names)] if on else "pau" for k, on in enumerate(voiced)]
    phones: list[list] = []
    for k, name in enumerate(per_frame):
        if phones and phones[-1][0] == name:
            phones[-1][2] = (k + 1) / 25
        else:
            phones.append([name, k / 25, (k + 1) / 25])
    return phones


def make_conversation(rng: np.random.Generator, conv_id: str, split: str, seconds: float) -> Conversation:
    """Two parties with random-ish speech-like audio and smooth motion."""
    frames = int(seconds * 25)
    samples = frames * SAMPLES_PER_FRAME
    time_axis = np.arange(samples) / SAMPLE_RATE
    audio = np.zeros((2, samples), np.float32)
    motion = np.zeros((2, frames, MOTION_DIM), np.float32)
    labels = []
    for party in range(2):
        voiced = rng.random(frames) > 0.5
        labels.append(PartyLabels(phones=_phones_of(voiced)))
        envelope = np.repeat(voiced, SAMPLES_PER_FRAME)
        tone = np.sin(2 * np.pi * rng.uniform(100, 300) * time_axis)
        audio[party] = (0.3 * envelope * tone + 0.01 * rng.standard_normal(samples)).astype(np.float32)
        walk = np.cumsum(rng.standard_normal((frames, MOTION_DIM)) * 0.02, axis=0)
        kernel = np.ones(5) / 5
        smooth = np.stack([np.convolve(walk[:, d], kernel, mode="same") for d in range(MOTION_DIM)], axis=1)
        motion[party] = (REST + 0.1 * np.tanh(smooth)).astype(np.float32)
    return Conversation(id=conv_id, split=split, audio=audio, motion=motion, voices=["test_a", "test_b"],
                        labels=labels,
                        style=[{"neutral": REST.tolist()}, {"neutral": REST.tolist()}])


def make_dataset(root: Path, train: int = 3, val: int = 2, seconds: float = 4.0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        conversations = [make_conversation(rng, f"{split}-{i}", split, seconds + i) for i in range(count)]
        write_shard(root / split / "shard-00000.npz", conversations)
    return root


def test_standin_follows_the_contract_shapes():
    from dystream.training.dataset import WindowBatch

    model = StandInGenerator(StandInConfig())
    left, right = model.audio_context()
    assert (left, right) == (640, 640)
    batch, frames = 3, model.cfg.window
    audio = torch.zeros(batch, left + frames * SAMPLES_PER_FRAME + right)
    loss, stats = model(WindowBatch(audio, audio, torch.zeros(batch, frames, MOTION_DIM), torch.zeros(batch, MOTION_DIM),
                                    torch.ones(batch, dtype=torch.bool)), generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss) and "sigma_mean" in stats


if __name__ == "__main__":  # the DDP test's torchrun entry: the command line, with checkpoint saves recorded
    import sys

    from dystream.cli import main

    sys.exit(main(sys.argv[1:]))
