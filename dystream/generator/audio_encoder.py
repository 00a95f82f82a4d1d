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

With ``mean_norm_seconds`` the front end also normalises each stream by its own running
mean log-mel (``RunningMean``): a power-weighted exponential mean over the mel frames each
frame adds (the last ``mels_per_frame`` of its window), carried in the step state, so a
stream's long-term spectrum (speaker and channel) is taken out causally.
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


def causal_ema(values: torch.Tensor, decay: torch.Tensor, start: torch.Tensor | None = None,
               block: int = 256) -> torch.Tensor:
    """Running sums r_t = decay_t * r_{t-1} + values_t over dim 1 of values [B, T, ...] with
    decays [B, T] in (0, 1], from r_{-1} = ``start`` [B, ...] (zeros if None), as block-wise
    lower-triangular matmuls (kernel exp(L_i - L_j), L the cumulative log decay)."""
    b, t = values.shape[:2]
    flat = values.reshape(b, t, -1).float()
    carry = flat.new_zeros(b, flat.shape[-1]) if start is None else start.reshape(b, -1).float()
    log_decay = decay.float().log()
    out = []
    for s in range(0, t, block):
        chunk = flat[:, s:s + block]
        n = chunk.shape[1]
        cumulative = log_decay[:, s:s + n].cumsum(dim=1)  # [B, n]: log of the decay since the block's start
        lag = cumulative[:, :, None] - cumulative[:, None, :]  # [B, i, j]
        below = torch.ones(n, n, dtype=torch.bool, device=values.device).tril()
        kernel = torch.where(below, lag, torch.full_like(lag, -torch.inf)).exp()
        sums = torch.bmm(kernel, chunk) + cumulative.exp()[:, :, None] * carry[:, None]
        out.append(sums)
        carry = sums[:, -1]
    return torch.cat(out, dim=1).reshape(values.shape)


class RunningMean(nn.Module):
    """A stream's causal, power-weighted running mean of its log-mel, and the shift of each
    frame's window toward a learned prior mean.

    Frame t adds its newest mel frames x_k (the last ``mels_per_frame`` of its window) with
    weights w_k = exp(4 * mean over bands of x_k), the frame's power relative to the front
    end's reference level (speech ~1, a pause or a noise floor 25 dB down ~0.003):
    W_t = mean w_k, N_t = d_t N_{t-1} + mean w_k x_k, D_t = d_t D_{t-1} + W_t. The decay
    d_t = exp(-min(W_t, 1) / (tau * fps)) forgets at the pace speech arrives, so the mean
    is over about the last tau seconds of speech and a long pause neither drags it toward
    the silence nor forgets it. The mean m_t = (N_t + c prior) / (D_t + c) shrinks toward
    the prior while little speech has been heard (c = ``mean_norm_prior_frames``), and every
    mel frame of window t is shifted by prior - m_t. State: (N [B, *mel], D [B, 1]), zeros
    at a stream's start."""

    def __init__(self, cfg: GeneratorConfig, mel_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.rate = 1.0 / (cfg.mean_norm_seconds * cfg.frames_per_second)
        self.new_mels = cfg.mels_per_frame
        self.prior_weight = float(cfg.mean_norm_prior_frames)
        # The mean a stream is moved to; set from data before training (calibrate).
        self.prior = nn.Parameter(torch.zeros(mel_shape))

    def frame_sums(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """windows [B, T, *mel, K] -> each frame's weighted sum of its new mels [B, T, *mel]
        and their weight [B, T, 1]."""
        new = windows[..., -self.new_mels:].float()  # [B, T, *mel, n]
        level = new.flatten(2, -2).mean(dim=2)  # [B, T, n]: mean over the bands (and versions)
        weight = torch.exp(4.0 * level.clamp(max=3.0))
        weight_b = weight.reshape(weight.shape[:2] + (1,) * (new.dim() - 3) + weight.shape[2:])
        return (new * weight_b).mean(dim=-1), weight.mean(dim=-1, keepdim=True)

    def decay(self, weight: torch.Tensor) -> torch.Tensor:
        """Per-frame decay of the running sums from the frame's weight W_t."""
        return torch.exp(-self.rate * weight.clamp(max=1.0))

    def shift(self, windows: torch.Tensor, sums: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """windows [B, T, *mel, K] and running (N, D) at each frame -> the shifted windows."""
        mean = (sums + self.prior_weight * self.prior) / (weights.reshape(weights.shape + (1,) * (sums.dim() - 3))
                                                          + self.prior_weight)
        return windows + (self.prior - mean).to(windows.dtype)[..., None]

    def forward(self, windows: torch.Tensor, stats_frames: int = 0,
                state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Offline: windows [B, S + T, *mel, K] -> ([B, T, *mel, K] shifted, (N, D) after the
        last frame). The first ``stats_frames`` windows only feed the statistics."""
        x, w = self.frame_sums(windows)
        start_n, start_w = (None, None) if state is None else state
        decay = self.decay(w)[..., 0]
        sums = causal_ema(x, decay, start_n)
        weights = causal_ema(w, decay, start_w)
        shifted = self.shift(windows[:, stats_frames:], sums[:, stats_frames:], weights[:, stats_frames:])
        return shifted, (sums[:, -1], weights[:, -1])

    def step(self, window: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        """One frame's window [B, 1, *mel, K] and state (N, D) -> (shifted window, new state)."""
        x, w = self.frame_sums(window)
        decay = self.decay(w[:, 0])  # [B, 1]
        n = decay.reshape(decay.shape + (1,) * (x.dim() - 3)) * state[0] + x[:, 0]
        d = decay * state[1] + w[:, 0]
        return self.shift(window, n[:, None], d[:, None]), (n, d)

    @torch.no_grad()
    def calibrate(self, windows: torch.Tensor) -> None:
        """Set the prior to the power-weighted mean of the new mels of windows [B, T, *mel, K]."""
        x, w = self.frame_sums(windows)
        self.prior.copy_(x.sum(dim=(0, 1)) / w.sum().clamp(min=1e-6))


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
        mel_shape = (self.versions, cfg.n_mels) if cfg.front_warps else (cfg.n_mels,)
        self.running_mean = RunningMean(cfg, mel_shape) if cfg.mean_norm_seconds else None

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

    def samples_needed(self, num_frames: int, stats_frames: int = 0) -> int:
        """Samples an offline call for ``num_frames`` frames reads (from ``-front_left_samples``,
        or ``stats_frames`` frames before that)."""
        return (self.cfg.front_left_samples + (stats_frames + num_frames) * self.cfg.samples_per_frame
                + self.lookahead_samples)

    @property
    def versions(self) -> int:
        """Warped versions of the spectrum the front end pools over (1: the plain one)."""
        return max(len(self.cfg.front_warps), 1)

    def _windows(self, audio: torch.Tensor, num_frames: int, stats_frames: int = 0, augment=None) -> torch.Tensor:
        """Each frame's mel window [B, S + T, (P,) M, K] (S = ``stats_frames``)."""
        audio = audio[:, : self.samples_needed(num_frames, stats_frames)]
        mel = self.logmel(audio, **(augment or {}))  # [B, J, M] ([B, J, P, M] pooled)
        return mel.unfold(1, self.front_kernel, self.cfg.mels_per_frame)  # [B, T, (P,) M, K]

    def _front(self, windows: torch.Tensor) -> torch.Tensor:
        """Front projection of windows [B, T, (P,) M, K] -> [B, T, H], or [B * P, T, H]
        (batch-major) before a deep pool."""
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

    def forward(self, audio: torch.Tensor, num_frames: int, augment=None, stats_frames: int = 0) -> torch.Tensor:
        """audio [B, N] starting ``front_left_samples`` before frame 0 -> features [B, T, H].

        ``augment``: training-only keyword arguments of the log-mel front end (``warp``,
        ``eq``, ``channel``; see ``LogMel.forward``). ``stats_frames``: the audio starts that
        many frames earlier, audio that only feeds the running mean (``mean_norm_seconds``;
        without it those frames are skipped). Computed in the encoder's own dtype
        (``compute_dtype``); the features come back in the audio's."""
        need = self.samples_needed(num_frames, stats_frames)
        if audio.shape[1] < need:
            raise ValueError(f"audio encoder needs {need} samples for {num_frames} frames"
                             f"{f' after {stats_frames} statistics frames' if stats_frames else ''}, "
                             f"got {audio.shape[1]}")
        out_dtype, audio = audio.dtype, audio.to(self.compute_dtype)
        if self.running_mean is None:
            windows = self._windows(audio[:, stats_frames * self.cfg.samples_per_frame:], num_frames, 0, augment)
        else:
            windows, _ = self.running_mean(self._windows(audio, num_frames, stats_frames, augment), stats_frames)
        x = self._front(windows)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i + 1 == self.cfg.front_pool_depth:
                x = self._pool(x)
        return self.out_norm(x).to(out_dtype)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the encoder computes and keeps its streaming state in: its weights'.
        (Inference on the CPU runs the encoders in float64, ``Generator.set_encoder_dtype``:
        float32 matmuls round differently for a whole clip and for one frame.)"""
        return self.front.weight.dtype

    # -- incremental ------------------------------------------------------
    def initial_state(self, batch: int, device=None) -> list[torch.Tensor]:
        """Per block its conv history (in ``compute_dtype``), then (running mean only) the
        mean's sums N and D in float32; all zeros at a stream's start."""
        k, depth = self.cfg.audio_kernel - 1, self.cfg.front_pool_depth
        state = [torch.zeros(batch * (self.versions if i < depth else 1), k, self.cfg.audio_width,
                             device=device, dtype=self.compute_dtype) for i in range(len(self.blocks))]
        if self.running_mean is not None:
            state += [torch.zeros((batch,) + tuple(self.running_mean.prior.shape), device=device),
                      torch.zeros(batch, 1, device=device)]
        return state

    @property
    def step_samples(self) -> int:
        """Samples one incremental step reads: its frame's slice of the stream buffer."""
        return self.samples_needed(1)

    def step(self, audio_slice: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Features of one frame from its ``step_samples`` samples -> ([B, 1, H] in the audio's
        dtype, new state)."""
        windows = self._windows(audio_slice.to(self.compute_dtype), 1)
        blocks = len(self.blocks)
        new_state = []
        if self.running_mean is not None:
            windows, stats = self.running_mean.step(windows, (state[blocks], state[blocks + 1]))
        x = self._front(windows)
        for i, (block, history) in enumerate(zip(self.blocks, state[:blocks])):
            x, history = block.step(x, history)
            new_state.append(history)
            if i + 1 == self.cfg.front_pool_depth:
                x = self._pool(x)
        if self.running_mean is not None:
            new_state += list(stats)
        return self.out_norm(x).to(audio_slice.dtype), new_state
