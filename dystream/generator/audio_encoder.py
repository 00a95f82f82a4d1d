"""Causal audio encoder: log-mel -> one feature vector per motion frame (25 fps).

Lookahead lives in the layers, not in shifted features: the strided front
convolution that turns the 4 mel frames of motion frame t into one vector also
reads ``lookahead`` mel frames after them (10 ms each) and ``front_left_mels``
before them. Every later layer is a strictly causal convolution block (left
padding only). So frame t depends on audio up to sample
``640 * (t + 1) + lookahead_samples`` and on nothing later.

The same module runs offline (``forward``: many frames in one call, zero padding
before the first frame) and incrementally (``step``: one frame, with a small
state per layer that holds exactly the zero padding / history the offline call
sees), so both give the same features whatever the chunking.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dystream.generator.audio_frontend import LogMel
from dystream.generator.config import GeneratorConfig


class CausalConvBlock(nn.Module):
    """Pre-norm residual block: depthwise causal conv over frames, then an MLP."""

    def __init__(self, width: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.kernel = kernel
        self.norm = nn.LayerNorm(width)
        self.depthwise = nn.Conv1d(width, width, kernel, groups=width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, T, H]
        h = self.norm(x).transpose(1, 2)
        h = self.depthwise(F.pad(h, (self.kernel - 1, 0))).transpose(1, 2)
        return x + self.dropout(self.mlp(h))

    def step(self, x: torch.Tensor, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame x [B, 1, H]; history [B, kernel-1, H] of normed inputs (zeros at start)."""
        window = torch.cat([history, self.norm(x)], dim=1)  # [B, kernel, H]
        weight = self.depthwise.weight[:, 0, :].t()  # [kernel, H]
        h = (window * weight).sum(dim=1, keepdim=True) + self.depthwise.bias
        return x + self.mlp(h), window[:, 1:]


class CausalAudioEncoder(nn.Module):
    """One stream's encoder. ``stream`` selects its lookahead from the config."""

    def __init__(self, cfg: GeneratorConfig, stream: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.lookahead_mels = cfg.lookahead_mels(stream)
        self.lookahead_samples = cfg.lookahead_samples(stream)
        self.front_kernel = cfg.front_left_mels + cfg.mels_per_frame + self.lookahead_mels
        self.logmel = LogMel(cfg.n_mels, cfg.mel_window, cfg.mel_hop, cfg.sample_rate, cfg.front_warps)
        self.front = nn.Linear(cfg.n_mels * self.front_kernel, cfg.audio_width)
        self.blocks = nn.ModuleList(
            CausalConvBlock(cfg.audio_width, cfg.audio_kernel, cfg.dropout) for _ in range(cfg.audio_layers)
        )
        self.out_norm = nn.LayerNorm(cfg.audio_width)

    def widen_front(self, weight: torch.Tensor) -> torch.Tensor:
        """A front projection weight trained with a shorter lookahead -> this encoder's, with
        zero weights on the extra lookahead mel frames (the encoder then computes exactly
        what the shorter one did, and training can learn to use the new frames)."""
        n_mels, kernel = self.cfg.n_mels, self.front_kernel
        if weight.shape[0] != self.front.weight.shape[0] or weight.shape[1] % n_mels:
            raise ValueError(f"front weight {tuple(weight.shape)} does not fit this encoder "
                             f"({tuple(self.front.weight.shape)})")
        old_kernel = weight.shape[1] // n_mels
        if old_kernel > kernel:
            raise ValueError(f"the weights read {old_kernel - kernel} more lookahead mel frames than "
                             "this encoder; a lookahead can grow from trained weights, not shrink")
        grown = weight.new_zeros(weight.shape[0], n_mels, kernel)
        grown[:, :, :old_kernel] = weight.unflatten(1, (n_mels, old_kernel))  # flattened [M, K], K fastest
        return grown.flatten(1)

    def samples_needed(self, num_frames: int) -> int:
        """Samples an offline call for ``num_frames`` frames reads (from ``-front_left_samples``)."""
        return self.cfg.front_left_samples + num_frames * self.cfg.samples_per_frame + self.lookahead_samples

    @property
    def versions(self) -> int:
        """Warped versions of the spectrum the front end pools over (1: the plain one)."""
        return max(len(self.cfg.front_warps), 1)

    def _front(self, audio: torch.Tensor, num_frames: int, augment=None) -> torch.Tensor:
        """Front projection -> [B, T, H], or [B * P, T, H] (batch-major) before a deep pool."""
        audio = audio[:, : self.samples_needed(num_frames)]
        mel = self.logmel(audio, **(augment or {}))  # [B, J, M] ([B, J, P, M] pooled)
        windows = mel.unfold(1, self.front_kernel, self.cfg.mels_per_frame)  # [B, T, (P,) M, K]
        if not self.cfg.front_warps:
            return self.front(windows.flatten(2))
        # Vocal-tract-length pooling: the same projection (and the first front_pool_depth
        # blocks) on every warped version, then the element-wise maximum over the P versions.
        x = self.front(windows.flatten(3))  # [B, T, P, H]
        if not self.cfg.front_pool_depth:
            return x.amax(dim=2)
        return x.transpose(1, 2).flatten(0, 1)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """[B * P, T, H] -> the maximum over the P versions, [B, T, H]."""
        return x.unflatten(0, (-1, self.versions)).amax(dim=1)

    def forward(self, audio: torch.Tensor, num_frames: int, augment=None) -> torch.Tensor:
        """audio [B, N] starting ``front_left_samples`` before frame 0 -> features [B, T, H].

        ``augment``: training-only keyword arguments of the log-mel front end (``warp``,
        ``eq``, ``channel``; see ``LogMel.forward``)."""
        if audio.shape[1] < self.samples_needed(num_frames):
            raise ValueError(
                f"audio encoder needs {self.samples_needed(num_frames)} samples for {num_frames} "
                f"frames, got {audio.shape[1]}"
            )
        x = self._front(audio, num_frames, augment)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i + 1 == self.cfg.front_pool_depth:
                x = self._pool(x)
        return self.out_norm(x)

    # -- incremental ------------------------------------------------------
    def initial_state(self, batch: int, device=None, dtype=torch.float32) -> list[torch.Tensor]:
        k, depth = self.cfg.audio_kernel - 1, self.cfg.front_pool_depth
        return [torch.zeros(batch * (self.versions if i < depth else 1), k, self.cfg.audio_width,
                            device=device, dtype=dtype) for i in range(len(self.blocks))]

    @property
    def step_samples(self) -> int:
        """Samples one incremental step reads: its frame's slice of the stream buffer."""
        return self.samples_needed(1)

    def step(self, audio_slice: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Features of one frame from its ``step_samples`` samples -> ([B, 1, H], new state)."""
        x = self._front(audio_slice, 1)
        new_state = []
        for i, (block, history) in enumerate(zip(self.blocks, state)):
            x, history = block.step(x, history)
            new_state.append(history)
            if i + 1 == self.cfg.front_pool_depth:
                x = self._pool(x)
        return self.out_norm(x), new_state
