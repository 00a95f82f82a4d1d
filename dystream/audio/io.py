"""Reading and writing audio at the system's one format: 16 kHz mono float32."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from dystream.config import SAMPLE_RATE
from dystream.errors import InputError


def to_mono_16k(audio: np.ndarray, sample_rate: int, *, source: str = "audio",
                note: bool = True) -> np.ndarray:
    """Mix down to mono and resample to 16 kHz (soxr), with a warning for each change.

    ``audio`` is [samples] or [samples, channels]. ``note=False`` for internal sources
    whose format is expected (a speech engine's native rate), where a warning is noise.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        if audio.shape[1] > 1 and note:
            warnings.warn(f"{source}: {audio.shape[1]} channels mixed down to mono", stacklevel=2)
        audio = audio.mean(axis=1)
    elif audio.ndim != 1:
        raise InputError(f"{source}: audio must be [samples] or [samples, channels], got {audio.shape}")
    if sample_rate <= 0:
        raise InputError(f"{source}: invalid sample rate {sample_rate}")
    if sample_rate != SAMPLE_RATE:
        import soxr

        if note:
            warnings.warn(f"{source}: resampled from {sample_rate} Hz to {SAMPLE_RATE} Hz", stacklevel=2)
        audio = soxr.resample(audio, sample_rate, SAMPLE_RATE).astype(np.float32)
    return np.ascontiguousarray(audio)


def load_audio(path: str | Path, *, allow_empty: bool = False) -> np.ndarray:
    """Load an audio file as 16 kHz mono float32 in [-1, 1].

    Any format libsndfile reads (wav, flac, ogg, mp3 on recent builds); other
    sample rates are resampled and several channels mixed down, with a note.
    """
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise InputError(f"audio file not found: {path}")
    try:
        audio, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile's own message says what it could not read
        raise InputError(
            f"cannot read {path} as audio ({exc}); convert it to a wav file, e.g. "
            f"`ffmpeg -i {path.name} -ac 1 -ar {SAMPLE_RATE} out.wav`"
        ) from None
    audio = to_mono_16k(audio, sample_rate, source=str(path))
    if audio.size == 0 and not allow_empty:
        raise InputError(f"{path} holds no audio samples")
    return audio


def save_wav(path: str | Path, audio: np.ndarray) -> Path:
    """Write 16 kHz mono (or [channels, samples]) audio as 16-bit PCM wav."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.T
    sf.write(str(path), np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    return path
