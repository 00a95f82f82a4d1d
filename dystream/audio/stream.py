"""Live audio taken only as declared: a stream's encoding, rate and channel count, converted
chunk by chunk to the system's format (16 kHz mono float32), or refused with a clear error.

A live source declares its format once (``AudioFormat``); every chunk is then checked
against it: raw bytes are decoded by the declared encoding (odd-length PCM16 is refused),
arrays must have the declared dtype kind (an int16 array on a float stream is refused, not
reinterpreted), float samples must lie within [-1, 1] (int16-scaled floats are refused),
NaN and infinities are refused, interleaved channels are mixed down, and other rates are
resampled by a streaming resampler (soxr) whose state carries across chunks, so chunking
does not change the result beyond the resampler's own delay (its output lags the input by
a few milliseconds, and ``flush`` returns what it holds back).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dystream.config import SAMPLE_RATE
from dystream.errors import InputError

ENCODINGS = ("float32", "pcm16")
MIN_RATE, MAX_RATE = 8_000, 192_000
MAX_CHANNELS = 8


@dataclass(frozen=True)
class AudioFormat:
    """How a live stream's samples come: ``encoding`` "float32" (in [-1, 1]) or "pcm16"
    (signed 16-bit, little-endian in bytes), ``sample_rate`` in Hz, ``channels`` interleaved."""

    encoding: str = "float32"
    sample_rate: int = SAMPLE_RATE
    channels: int = 1

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise InputError(f"audio encoding {self.encoding!r}: use one of {', '.join(ENCODINGS)}")
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, (int, np.integer)) \
                or not MIN_RATE <= self.sample_rate <= MAX_RATE:
            raise InputError(f"sample rate {self.sample_rate!r}: give whole Hz from {MIN_RATE} to {MAX_RATE}")
        if isinstance(self.channels, bool) or not isinstance(self.channels, (int, np.integer)) \
                or not 1 <= self.channels <= MAX_CHANNELS:
            raise InputError(f"channels {self.channels!r}: give 1 to {MAX_CHANNELS}")

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one sample of every channel."""
        return (4 if self.encoding == "float32" else 2) * self.channels


class AudioStream:
    """Chunks of one live stream in its declared format -> 16 kHz mono float32."""

    def __init__(self, fmt: AudioFormat = AudioFormat(), *, name: str = "audio") -> None:
        self.format, self.name = fmt, name
        self._resampler = None
        if fmt.sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(fmt.sample_rate, SAMPLE_RATE, 1, dtype="float32")

    def convert(self, chunk) -> np.ndarray:
        """One chunk (bytes, or an array [samples] / [samples, channels] of the declared kind)
        -> float32 samples at 16 kHz, mono (possibly fewer or none while a resampler fills)."""
        samples = self._decode(chunk)
        if not np.all(np.isfinite(samples)):
            raise InputError(f"{self.name}: the chunk contains NaN or infinite samples")
        if self.format.encoding == "float32" and samples.size and float(np.abs(samples).max()) > 1.0 + 1e-6:
            raise InputError(f"{self.name}: float samples must lie in [-1, 1] (got up to "
                             f"{float(np.abs(samples).max()):.3g}); declare pcm16 for 16-bit integers")
        if self.format.channels > 1:
            samples = samples.reshape(-1, self.format.channels).mean(axis=1)
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return samples

    def flush(self) -> np.ndarray:
        """What the resampler still holds (the end of the stream), as 16 kHz samples."""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)

    def _decode(self, chunk) -> np.ndarray:
        fmt = self.format
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            data = bytes(chunk)
            if len(data) % fmt.bytes_per_frame:
                raise InputError(f"{self.name}: {len(data)} bytes is not a whole number of {fmt.encoding} "
                                 f"samples x {fmt.channels} channel(s) ({fmt.bytes_per_frame} bytes each)")
            if fmt.encoding == "pcm16":
                return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
            return np.frombuffer(data, dtype="<f4").astype(np.float32)
        array = np.asarray(chunk)
        if array.ndim == 2:
            if array.shape[1] != fmt.channels:
                raise InputError(f"{self.name}: the chunk has {array.shape[1]} channels, the stream declared "
                                 f"{fmt.channels}")
            array = array.reshape(-1)
        elif array.ndim != 1:
            raise InputError(f"{self.name}: a chunk must be [samples] or [samples, channels], got {array.shape}")
        elif array.size % fmt.channels:
            raise InputError(f"{self.name}: {array.size} interleaved samples is not a whole number of "
                             f"{fmt.channels}-channel frames")
        if fmt.encoding == "pcm16":
            if array.dtype != np.int16:
                raise InputError(f"{self.name}: the stream declared pcm16, got {array.dtype} samples")
            return array.astype(np.float32) / 32768.0
        if array.dtype.kind != "f":
            raise InputError(f"{self.name}: the stream declared float32, got {array.dtype} samples (declare "
                             "pcm16 for 16-bit integers)")
        return array.astype(np.float32, copy=False)
