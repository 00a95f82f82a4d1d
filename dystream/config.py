"""The one source of truth for the constants every part of dystream shares.

Everything that talks about time, audio or motion imports these instead of
writing its own numbers: the data engine, the autoencoders, the generator, the
streaming engine, training and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MediaConfig:
    """Frame rate and audio format of every stream in the system."""

    frames_per_second: int = 25
    sample_rate: int = 16_000

    @property
    def samples_per_frame(self) -> int:
        """Audio samples that belong to one motion frame (640 at 16 kHz / 25 fps)."""
        samples, remainder = divmod(self.sample_rate, self.frames_per_second)
        if remainder:
            raise ValueError("sample_rate must be a multiple of frames_per_second")
        return samples

    @property
    def frame_seconds(self) -> float:
        return 1.0 / self.frames_per_second

    def seconds_to_frame(self, seconds: float) -> float:
        """Fractional frame index of a time in seconds (frame t covers [t, t+1) / fps)."""
        return seconds * self.frames_per_second

    def frames_for_samples(self, num_samples: int) -> int:
        """Number of whole frames that `num_samples` of audio cover."""
        return num_samples // self.samples_per_frame


MEDIA = MediaConfig()

FRAMES_PER_SECOND: int = MEDIA.frames_per_second
SAMPLE_RATE: int = MEDIA.sample_rate
SAMPLES_PER_FRAME: int = MEDIA.samples_per_frame

# Streams of a dyadic conversation, in the order every array stores them.
SELF, OTHER = 0, 1
STREAM_NAMES: tuple[str, str] = ("self", "other")
