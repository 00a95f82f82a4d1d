"""Seeded audio augmentation of one party's track: gain, tape speed, noise, reverb, band limit.

Tape speed (resampling) shifts pitch and tempo together, so every label time
must be divided by the factor; :func:`sample_augmentation` draws one factor per
conversation (both parties share the timeline) and the other settings per party.
Everything is vectorised: reverb is one FFT convolution with a synthetic
exponentially decaying noise impulse response; band limiting is one FFT mask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from dystream.config import SAMPLE_RATE

# Every track's speech is levelled to this RMS before the random gain (the engines differ
# by more than 10 dB); the noise floor's SNR is taken against it.
SPEECH_RMS = 0.05


@dataclass
class PartyAugmentation:
    gain_db: float
    snr_db: float            # speech level over the noise floor
    reverb_seconds: float    # RT60 of the synthetic room; 0 = dry
    reverb_mix: float
    low_hz: float            # band limit (telephone-ish to full band)
    high_hz: float

    def as_dict(self) -> dict:
        return asdict(self)


def sample_speed(rng: np.random.Generator) -> float:
    """Tape speed factor shared by both parties (>1 = faster and higher)."""
    return float(rng.uniform(0.96, 1.04))


def sample_augmentation(rng: np.random.Generator) -> PartyAugmentation:
    band_limited = rng.random() < 0.3
    return PartyAugmentation(
        gain_db=float(rng.uniform(-9.0, 3.0)),
        snr_db=float(rng.uniform(20.0, 45.0)),
        reverb_seconds=float(rng.uniform(0.15, 0.6)) if rng.random() < 0.5 else 0.0,
        reverb_mix=float(rng.uniform(0.05, 0.3)),
        low_hz=float(rng.uniform(80.0, 300.0)) if band_limited else 0.0,
        high_hz=float(rng.uniform(3400.0, 6000.0)) if band_limited else 0.0,
    )


def level_speech(track: np.ndarray, rms: float = SPEECH_RMS) -> np.ndarray:
    """``track`` scaled so that its speech (the samples above 1e-4) has RMS ``rms``; a
    silent track comes back as it is."""
    loud = np.abs(track) > 1e-4
    if not loud.any():
        return track
    return track * np.float32(rms / float(np.sqrt(np.mean(track[loud] ** 2))))


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``audio`` ``factor`` times faster (pitch follows): length / factor."""
    if abs(factor - 1.0) < 1e-6:
        return audio
    import soxr

    # resampling to rate/factor and playing at the original rate speeds up by factor
    return soxr.resample(audio, SAMPLE_RATE, SAMPLE_RATE / factor).astype(np.float32)


def _band_mask(freqs: np.ndarray, low_hz: float, high_hz: float, edge_hz: float = 150.0) -> np.ndarray:
    """1 inside [low, high], 0 outside, with raised-cosine edges (a brick wall would ring)."""
    rise = np.clip((freqs - (low_hz - edge_hz / 2)) / edge_hz, 0.0, 1.0)
    fall = np.clip(((high_hz + edge_hz / 2) - freqs) / edge_hz, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * rise)) * (0.5 - 0.5 * np.cos(np.pi * fall))


def apply(audio: np.ndarray, aug: PartyAugmentation, rng: np.random.Generator, *,
          speech_rms: float = SPEECH_RMS) -> np.ndarray:
    """Augment one party's track (same length out); ``speech_rms`` is its speech level before gain."""
    out = audio.astype(np.float32, copy=True)
    n = len(out)
    if n == 0:
        return out
    import scipy.fft

    tail = int(aug.reverb_seconds * SAMPLE_RATE)
    size = scipy.fft.next_fast_len(n + tail, real=True)  # room for the reverb tail
    spectrum = None
    if aug.reverb_seconds > 0:
        length = int(aug.reverb_seconds * SAMPLE_RATE)
        t = np.arange(length) / SAMPLE_RATE
        # exponential decay reaching -60 dB at reverb_seconds
        impulse = rng.standard_normal(length, dtype=np.float32)
        impulse *= np.exp(-6.9 * t / aug.reverb_seconds).astype(np.float32)
        impulse *= aug.reverb_mix / (np.sqrt(np.sum(impulse ** 2)) + 1e-9)
        impulse[0] += 1.0  # the direct sound
        spectrum = scipy.fft.rfft(out, size) * scipy.fft.rfft(impulse, size)
    if aug.high_hz > 0:
        if spectrum is None:
            spectrum = scipy.fft.rfft(out, size)
        freqs = scipy.fft.rfftfreq(size, 1.0 / SAMPLE_RATE).astype(np.float32)
        spectrum = spectrum * _band_mask(freqs, aug.low_hz, aug.high_hz)
    if spectrum is not None:
        out = scipy.fft.irfft(spectrum, size)[:n].astype(np.float32)
    gain = 10.0 ** (aug.gain_db / 20.0)
    out *= np.float32(gain)
    noise = speech_rms * gain * 10.0 ** (-aug.snr_db / 20.0)
    out += rng.standard_normal(n, dtype=np.float32) * np.float32(noise)
    return out
