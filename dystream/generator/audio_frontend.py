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

    def forward(self, samples: torch.Tensor, warp: torch.Tensor | None = None,
                eq: torch.Tensor | None = None, channel: "ChannelAugmentation | None" = None) -> torch.Tensor:
        """``warp`` [B]: training-only frequency scaling of each sample's spectrum (bin k
        reads the power at k / warp); ``eq`` [B, n_mels]: gains in natural-log power
        added to each mel band; ``channel``: a training-only random channel (band gains
        and a room's tail, :class:`ChannelAugmentation`). All None at inference."""
        # Always float32: a bf16 power spectrum would lose most of the log-mel's dynamic range.
        with torch.autocast(device_type=samples.device.type, enabled=False):
            frames = samples.float().unfold(-1, self.window, self.hop)  # [B, J, window]
            spectrum = torch.fft.rfft(frames * self.hann.float(), dim=-1)
            power = spectrum.real.square() + spectrum.imag.square()
            if warp is not None:
                power = warp_frequencies(power, warp)
            if channel is not None:
                power = channel.apply(power)
            log_mel = torch.log(power @ self.mel_filters.float() + 1e-6)
            if self.pool_warps:
                log_mel = log_mel.unflatten(-1, (len(self.pool_warps), self.n_mels))  # [B, J, K, M]
            if eq is not None:
                eq = eq.float()[:, None, None, :] if self.pool_warps else eq.float()[:, None, :]
                log_mel = log_mel + eq
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


def random_equaliser(batch: int, n_mels: int, max_db: float, generator=None, device=None) -> torch.Tensor:
    """Smooth random gain curves [B, n_mels] in natural-log power: three cosines over the
    mel axis with amplitudes drawn so that the curve stays within +/- max_db."""
    position = torch.linspace(0.0, math.pi, n_mels, device=device)
    harmonics = torch.arange(1, 4, device=device, dtype=torch.float32)
    amplitude = (torch.rand(batch, 3, generator=generator, device=device) * 2 - 1) / 3
    curve = amplitude @ torch.cos(harmonics[:, None] * position[None])
    return curve * (max_db * math.log(10.0) / 10.0)


class ChannelAugmentation:
    """A random recording channel per sample, applied to power spectra [B, J, F] in the
    front end (training only): gains per frequency bin [B, F] (band limits and notches,
    multiplied in) and a room's late reverberation, modelled in the power domain as an
    exponentially decaying tail over earlier frames (energy ``tail_energy`` [B] relative to
    the direct sound, decay ``decay`` [B] per frame; 0 energy = dry, None = no rooms).

    The data engine augments each track once, on the waveform; this draws a new channel
    for every window, so a voice is heard through many more rooms and bandwidths."""

    def __init__(self, gains: torch.Tensor, tail_energy: torch.Tensor | None, decay: torch.Tensor,
                 tail_frames: int, noise_floor: torch.Tensor | None = None, generator=None) -> None:
        self.gains, self.tail_energy, self.decay, self.tail_frames = gains, tail_energy, decay, tail_frames
        # Noise power per bin relative to the window's mean power per bin [B] (0: none), and
        # the generator its exponential draws come from (drawn in apply, where J is known).
        self.noise_floor, self.generator = noise_floor, generator

    @classmethod
    def draw(cls, batch: int, n_bins: int, sample_rate: int, hop: int, *, masks: int, mask_width: float,
             band_prob: float, reverb_prob: float, gain_db: float = 0.0, noise_prob: float = 0.0,
             noise_snr: tuple[float, float] = (5.0, 30.0), generator=None,
             device=None) -> "ChannelAugmentation":
        """``masks`` notches per sample (each -30 dB over up to ``mask_width`` of the mel range,
        centres uniform on the mel scale), a band limit with probability ``band_prob`` (high
        pass at 80-400 Hz, low pass at 2.5-6 kHz, 150 Hz raised-cosine edges), a room with
        probability ``reverb_prob`` (RT60 0.2-1.0 s, tail -20 to -6 dB under the direct sound),
        a level change uniform in +/- ``gain_db`` and, with probability ``noise_prob``, white
        noise ``noise_snr`` (low, high; uniform in dB) under the window's mean power."""
        def uniform(*shape):
            return torch.rand(shape, generator=generator, device=device)

        hz = torch.linspace(0.0, sample_rate / 2, n_bins, device=device)
        mel = _hz_to_mel(hz)
        top = float(_hz_to_mel(torch.tensor(sample_rate / 2)))
        gains = torch.ones(batch, n_bins, device=device)
        for _ in range(masks):
            centre = uniform(batch, 1) * top
            half = uniform(batch, 1) * mask_width * top / 2
            inside = (mel[None] - centre).abs() <= half
            gains = torch.where(inside, gains * 1e-3, gains)
        limited = uniform(batch, 1) < band_prob
        low = 80.0 + uniform(batch, 1) * 320.0
        high = 2500.0 + uniform(batch, 1) * 3500.0
        rise = ((hz[None] - (low - 75.0)) / 150.0).clamp(0.0, 1.0)
        fall = (((high + 75.0) - hz[None]) / 150.0).clamp(0.0, 1.0)
        band = ((0.5 - 0.5 * torch.cos(math.pi * rise)) * (0.5 - 0.5 * torch.cos(math.pi * fall))).square()
        gains = gains * torch.where(limited, band.clamp(min=1e-4), torch.ones_like(band))
        rt60 = 0.2 + uniform(batch) * 0.8
        tail_db = -20.0 + uniform(batch) * 14.0
        tail_energy = (torch.where(uniform(batch) < reverb_prob, 10.0 ** (tail_db / 10.0), torch.zeros_like(tail_db))
                       if reverb_prob > 0 else None)
        # Power falls 60 dB over RT60: a factor exp(-13.8 hop / (rate * RT60)) per frame.
        decay = torch.exp(-13.8 * hop / (sample_rate * rt60))
        if gain_db > 0:
            gains = gains * (10.0 ** ((uniform(batch, 1) * 2 - 1) * gain_db / 10.0))
        noise_floor = None
        if noise_prob > 0:
            low, high = noise_snr
            snr_db = low + uniform(batch) * (high - low)
            noise_floor = torch.where(uniform(batch) < noise_prob, 10.0 ** (-snr_db / 10.0), torch.zeros_like(snr_db))
        return cls(gains, tail_energy, decay, tail_frames=int(math.ceil(1.0 * sample_rate / hop)),
                   noise_floor=noise_floor, generator=generator)

    def apply(self, power: torch.Tensor) -> torch.Tensor:
        power = self._with_tail(power * self.gains[:, None, :])
        if self.noise_floor is None:
            return power
        # White noise: flat expected power per bin, exponentially distributed per frame and
        # bin (a periodogram's), scaled to the window's mean power per bin (frames with and
        # without speech alike: a time-domain SNR).
        level = power.mean(dim=(1, 2)) * self.noise_floor                        # [B]
        draw = torch.rand(power.shape, generator=self.generator, device=power.device, dtype=power.dtype)
        return power - level[:, None, None] * torch.log1p(-draw)

    def _with_tail(self, power: torch.Tensor) -> torch.Tensor:
        if self.tail_energy is None:
            return power
        j = power.shape[1]
        k = torch.arange(1, self.tail_frames + 1, device=power.device, dtype=power.dtype)
        kernel = self.decay[:, None] ** k[None]                                   # [B, K], lags 1..K
        kernel = kernel * (self.tail_energy / kernel.sum(dim=1))[:, None]
        # Causal: frame j gets sum_k kernel[k] * power[j - k]; one FFT convolution over frames.
        kernel = torch.nn.functional.pad(kernel, (1, 0))                         # lag 0: no tail
        n = j + self.tail_frames + 1
        tail = torch.fft.irfft(torch.fft.rfft(power, n, dim=1) * torch.fft.rfft(kernel, n, dim=1)[:, :, None],
                               n, dim=1)[:, :j]
        return power + tail.clamp(min=0.0)
