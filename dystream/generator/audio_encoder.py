"""Causal audio encoder: log-mel -> one feature vector per motion frame (25 fps).

Lookahead lives in the layers, not in shifted features: the strided front
projection that turns the 4 mel frames of motion frame t into one vector also
reads ``lookahead`` mel frames after them (10 ms each) and ``front_left_mels``
before them. Every later layer is a strictly causal convolution block. So frame t
depends on audio up to sample ``640 * (t + 1) + lookahead_samples`` and on nothing
later.

One ``forward`` serves training, offline generation and streaming: it encodes T
frames from their audio and a state (each block's last ``kernel - 1`` normalised
inputs), and returns the state after them. A stream starts from ``initial_state``
(zeros: the padding the first frame sees); feeding a clip in one call or frame by
frame computes the same features.
"""

from __future__ import annotations

import torch
from torch import nn

from dystream.generator.audio_frontend import LogMel
from dystream.generator.config import GeneratorConfig


class CausalConvBlock(nn.Module):
    """Pre-norm residual block: depthwise causal conv over frames, then an MLP."""

    def __init__(self, width: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.norm = nn.LayerNorm(width)
        self.depthwise = nn.Conv1d(width, width, kernel, groups=width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.dropout = nn.Dropout(0.0)  # the training recipe sets its rate

    def forward(self, x: torch.Tensor, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, H]; history [B, kernel-1, H]: the normed inputs before x -> (out, new history).

        The depthwise convolution as explicit taps: as fast as a convolution kernel for the
        long training windows and 60x faster for the one frame of a streaming step on a CPU
        (where float64 convolutions have no fast path)."""
        window = torch.cat([history, self.norm(x)], dim=1)  # [B, kernel - 1 + T, H]
        taps = window.unfold(1, self.kernel, 1)  # [B, T, H, kernel]
        h = self.mlp((taps * self.depthwise.weight[:, 0, :]).sum(dim=-1) + self.depthwise.bias)
        if self.training:  # (a module call per block and frame costs more than the step's conv)
            h = self.dropout(h)
        return x + h, window[:, window.shape[1] - (self.kernel - 1):]


class CausalAudioEncoder(nn.Module):
    """One stream's encoder. ``stream`` (SELF or OTHER) selects its lookahead from the config."""

    def __init__(self, cfg: GeneratorConfig, stream: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.lookahead_mels = cfg.lookahead_mels(stream)
        self.lookahead_samples = cfg.lookahead_samples(stream)
        self.front_kernel = cfg.front_left_mels + cfg.mels_per_frame + self.lookahead_mels
        self.logmel = LogMel(cfg.n_mels, cfg.mel_window, cfg.mel_hop, cfg.sample_rate, cfg.front_warps)
        self.front = nn.Linear(cfg.n_mels * self.front_kernel, cfg.audio_width)
        self.blocks = nn.ModuleList(CausalConvBlock(cfg.audio_width, cfg.audio_kernel)
                                    for _ in range(cfg.audio_layers))
        self.out_norm = nn.LayerNorm(cfg.audio_width)

    def samples_needed(self, num_frames: int) -> int:
        """Samples that ``num_frames`` frames read, from ``front_left_samples`` before the first."""
        return self.cfg.front_left_samples + num_frames * self.cfg.samples_per_frame + self.lookahead_samples

    @property
    def step_samples(self) -> int:
        """Samples one frame reads: its 640, the front's left context and the lookahead."""
        return self.samples_needed(1)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the encoder computes and keeps its state in: its weights'. (Inference on
        the CPU runs the encoders in float64, ``Generator.set_encoder_dtype``: float32 matmuls
        round differently for a whole clip and for one frame.)"""
        return self.front.weight.dtype

    def initial_state(self, batch: int, device=None) -> list[torch.Tensor]:
        """Per block its conv history in ``compute_dtype``; zeros at a stream's start."""
        k = self.cfg.audio_kernel - 1
        return [torch.zeros(batch, k, self.cfg.audio_width, device=device, dtype=self.compute_dtype)
                for _ in self.blocks]

    def forward(self, audio: torch.Tensor, num_frames: int, state: list[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """audio [B, >= samples_needed(T)] starting ``front_left_samples`` before frame 0 of the
        call, state from ``initial_state`` or the previous call (None: a stream's start) ->
        (features [B, T, H] in the audio's dtype, state after the T frames).

        Computed in the encoder's own dtype (``compute_dtype``)."""
        need = self.samples_needed(num_frames)
        if audio.shape[1] < need:
            raise ValueError(f"audio encoder needs {need} samples for {num_frames} frames, got {audio.shape[1]}")
        if state is None:
            state = self.initial_state(audio.shape[0], audio.device)
        out_dtype = audio.dtype
        # The log-mel computes in float32 whatever it is given; the layers in compute_dtype.
        mel = self.logmel(audio[:, :need]).to(self.compute_dtype)  # [B, J, M] ([B, J, P, M] pooled)
        windows = mel.unfold(1, self.front_kernel, self.cfg.mels_per_frame)  # [B, T, (P,) M, K]
        if self.cfg.front_warps:
            # Vocal-tract-length pooling: the same projection on every warped version, then the
            # element-wise maximum over the versions.
            x = self.front(windows.flatten(3)).amax(dim=2)
        else:
            x = self.front(windows.flatten(2))
        new_state = []
        for block, history in zip(self.blocks, state):
            x, history = block(x, history)
            new_state.append(history)
        return self.out_norm(x).to(out_dtype), new_state
