"""Log-mel features computed in torch, the same way offline and in streaming.

A mel frame j covers the samples [hop*j - (window - hop), hop*(j + 1)): it ends
where its hop ends, so it never reads audio after its own 10 ms. Each frame is
transformed on its own (Hann window, real FFT), so its value depends only on its
own 400 samples and a streaming caller gets the same numbers by handing over the
same samples.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_bins: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK-style mel filters, [n_bins, n_mels], each filter area-normalised."""
    bin_hz = torch.linspace(0.0, sample_rate / 2, n_bins, dtype=torch.float64)
    edges_hz = _mel_to_hz(torch.linspace(
        _hz_to_mel(torch.tensor(20.0)).item(), _hz_to_mel(torch.tensor(sample_rate / 2)).item(),
        n_mels + 2, dtype=torch.float64))
    lower, centre, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    rising = (bin_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bin_hz[:, None]) / (upper - centre)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    filters = filters * (2.0 / (upper - lower))  # equal area: loudness comparable across bands
    return filters.float()


def warp_matrix(n_bins: int, factor: float) -> torch.Tensor:
    """[n_bins, n_bins] matrix A with (power @ A) = ``warp_frequencies`` of the power
    spectrum for one fixed factor (bin k reads the power at k / factor): the warp applied
    to the identity, row j holding where bin j's power goes."""
    return warp_frequencies(torch.eye(n_bins)[None], torch.tensor([factor]))[0].double()


class LogMel(nn.Module):
    """Raw 16 kHz samples [B, N] -> log-mel frames [B, J, n_mels], J = (N - window) // hop + 1.

    With ``pool_warps`` (K factors) every frame is computed K times, from the power
    spectrum with its frequency axis scaled by each factor (folded into K filterbanks,
    one matmul): [B, J, K, n_mels]."""

    def __init__(self, n_mels: int, window: int, hop: int, sample_rate: int,
                 pool_warps: tuple[float, ...] = ()) -> None:
        super().__init__()
        self.window, self.hop = window, hop
        n_bins = window // 2 + 1
        t = torch.arange(window, dtype=torch.float64)
        hann = 0.5 - 0.5 * torch.cos(2 * math.pi * t / window)
        self.register_buffer("hann", hann.float(), persistent=False)
        filters = mel_filterbank(n_bins, n_mels, sample_rate)
        self.pool_warps = tuple(pool_warps)
        if self.pool_warps:
            filters = torch.cat([warp_matrix(n_bins, f) @ filters.double() for f in self.pool_warps], dim=1).float()
        self.register_buffer("mel_filters", filters, persistent=False)
        self.n_bins, self.n_mels = n_bins, n_mels

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        # Always float32: a bf16 power spectrum would lose most of the log-mel's dynamic range.
        with torch.autocast(device_type=samples.device.type, enabled=False):
            frames = samples.float().unfold(-1, self.window, self.hop)  # [B, J, window]
            spectrum = torch.fft.rfft(frames * self.hann.float(), dim=-1)
            power = spectrum.real.square() + spectrum.imag.square()
            log_mel = torch.log(power @ self.mel_filters.float() + 1e-6)
            if self.pool_warps:
                log_mel = log_mel.unflatten(-1, (len(self.pool_warps), self.n_mels))  # [B, J, K, M]
            # Fixed affine so that speech-level log-mels sit roughly in [-1, 1] before any layer.
            mel = (log_mel + 4.0) / 4.0
        return mel.to(samples.dtype)


def warp_frequencies(power: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Power spectra [B, J, F] with each sample's frequency axis scaled by factor [B]
    (> 1 moves energy up, as a shorter vocal tract does), by linear interpolation."""
    bins = power.shape[-1]
    source = torch.arange(bins, device=power.device, dtype=torch.float32)[None] / factor.float()[:, None]
    source = source.clamp(0, bins - 1)
    low = source.floor().long().clamp(max=bins - 2)
    frac = (source - low)[:, None, :]
    index = low[:, None, :].expand(-1, power.shape[1], -1)
    below = power.gather(-1, index)
    above = power.gather(-1, index + 1)
    return torch.lerp(below, above, frac)
