"""A streaming session: two live audio streams in, motion (and rendered) frames out.

Each stream keeps a sample buffer on a timeline that starts ``front_left_samples``
before frame 0 with silence (the same zeros the offline path pads with). Frame f
is made as soon as both streams hold their samples up to ``640 (f + 1) +
lookahead``: its slice of each stream goes through the generator's one frame step
(:class:`dystream.generator.sampling.FrameStep`, one stream), the same modules
offline generation runs. So a frame leaves the session one lookahead after its
audio ends, whatever the chunk sizes, and the motion is the offline motion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from dystream.audio.stream import AudioFormat, AudioStream
from dystream.config import OTHER, SELF, STREAM_NAMES
from dystream.errors import InputError
from dystream.generator.model import Generator
from dystream.generator.offline import cpu_threads
from dystream.generator.sampling import FrameStep, Sampling


@dataclass
class StreamFrame:
    index: int
    motion: np.ndarray  # [MOTION_DIM] raw motion units (on the photo, for a pipeline's session)
    image: np.ndarray | None = None  # [H, W, 3] uint8 when the session renders


class _StreamBuffer:
    """One audio stream's samples on the session's timeline (sample 0 = frame 0's first)."""

    def __init__(self, front_left: int, step_samples: int, samples_per_frame: int) -> None:
        self.front_left, self.width, self.spf = front_left, step_samples, samples_per_frame
        self.reset()

    def reset(self) -> None:
        self.start = -self.front_left  # timeline index of buffer[0]
        self.buffer = np.zeros(self.front_left, dtype=np.float32)

    @property
    def end(self) -> int:
        """Timeline index one past the last received sample."""
        return self.start + len(self.buffer)

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            self.buffer = np.concatenate([self.buffer, samples])

    def has_frame(self, frame: int) -> bool:
        return frame * self.spf - self.front_left + self.width <= self.end

    def frame_slice(self, frame: int) -> np.ndarray:
        """The samples frame ``frame`` reads; earlier audio no later frame needs is dropped."""
        offset = frame * self.spf - self.front_left - self.start
        window = self.buffer[offset: offset + self.width]
        if offset > 4 * self.width:  # trim now and then, not on every frame
            self.buffer = self.buffer[offset:]
            self.start += offset
        return window

    def truncate(self, timeline_end: int) -> None:
        """Forget samples at or after ``timeline_end``."""
        self.buffer = self.buffer[:max(0, timeline_end - self.start)]


class StreamingSession:
    """Feed audio of either stream in chunks of any size; receive frames as soon as possible.

    ``feed(stream, samples)`` returns the frames completed by that chunk (usually 0 or 1).
    ``flush()`` ends an utterance: it pads the missing lookahead (and a partial last
    frame) with silence, emits every frame that covers received audio, and then lets
    new audio continue from the next frame. ``clear(...)`` drops audio not yet turned
    into frames (barge-in: the agent's queued speech is cancelled). ``reset()`` starts over.
    ``to_photo`` maps the generated motion onto a photo (``Avatar.on_photo``) and
    ``render`` turns motion [T, D] into frames [T, H, W, 3] (``Pipeline.session`` sets both).
    ``formats`` declares each stream's audio ({"self": AudioFormat(...), ...}; default
    float32 at 16 kHz, mono): chunks are converted from it or refused
    (:mod:`dystream.audio.stream`). On a CPU each frame step runs on one torch thread, as
    offline generation does.
    """

    def __init__(self, model: Generator, anchor, *, seed: int = 0, sampling: Sampling = Sampling(),
                 to_photo: Callable[[np.ndarray], np.ndarray] | None = None,
                 render: Callable[[np.ndarray], np.ndarray] | None = None,
                 formats: dict[str, AudioFormat] | None = None) -> None:
        self.model = model.eval()
        self.cfg = model.cfg
        self.to_photo, self.render = to_photo, render
        anchor = np.asarray(anchor, np.float32)
        if anchor.shape != (self.cfg.motion_dim,):
            raise InputError(f"anchor must have {self.cfg.motion_dim} values, got {anchor.shape}")
        with torch.inference_mode(), cpu_threads(model.device, 1):  # as offline generation builds it
            self.step = FrameStep(model, anchor[None], [int(seed)], sampling)
        self.streams = tuple(_StreamBuffer(self.cfg.front_left_samples, encoder.step_samples,
                                           self.cfg.samples_per_frame) for encoder in model.encoders)
        formats = dict(formats or {})
        unknown = set(formats) - set(STREAM_NAMES)
        if unknown:
            raise InputError(f"formats for unknown streams {sorted(unknown)}: use {', '.join(STREAM_NAMES)}")
        self.formats = [formats.get(name, AudioFormat()) for name in STREAM_NAMES]
        self.inputs = [AudioStream(f, name=f"{name} audio") for f, name in zip(self.formats, STREAM_NAMES)]
        self.frames_emitted = 0

    # -- feeding -----------------------------------------------------------
    @staticmethod
    def _stream_index(stream) -> int:
        if stream in (SELF, OTHER):
            return int(stream)
        if stream in STREAM_NAMES:
            return STREAM_NAMES.index(stream)
        raise InputError(f"unknown stream {stream!r}: use 'self'/'other' or {SELF}/{OTHER}")

    def feed(self, stream, samples) -> list[StreamFrame]:
        """A chunk of ``stream`` ("self" / "other") in its declared format (bytes or an array)."""
        index = self._stream_index(stream)
        self.streams[index].append(self.inputs[index].convert(samples))
        return self._advance()

    def _advance(self) -> list[StreamFrame]:
        out = []
        with torch.inference_mode(), cpu_threads(self.model.device, 1):
            while all(s.has_frame(self.frames_emitted) for s in self.streams):
                for buffer, s in zip(self.step.audio, self.streams):
                    buffer[0].copy_(torch.from_numpy(s.frame_slice(self.frames_emitted)))
                motion = self.step()[0].float().cpu().numpy().copy()
                out.append(StreamFrame(self.frames_emitted, motion))
                self.frames_emitted += 1
        if out and self.to_photo is not None:
            for frame in out:
                frame.motion = self.to_photo(frame.motion)
        if out and self.render is not None:
            images = self.render(np.stack([f.motion for f in out]))
            for frame, image in zip(out, images):
                frame.image = np.asarray(image)
        return out

    # -- utterance control ---------------------------------------------------
    def flush(self) -> list[StreamFrame]:
        """Emit every frame that covers received audio, assuming silence after it."""
        for index, stream in enumerate(self.inputs):  # what a resampler still holds is audio received
            if stream.format.sample_rate != self.cfg.sample_rate:
                self.streams[index].append(stream.flush())
                self.inputs[index] = AudioStream(stream.format, name=stream.name)
        spf = self.cfg.samples_per_frame
        last_frame = max(-(-max(0, s.end) // spf) for s in self.streams)  # frames touched by any sample
        if last_frame <= self.frames_emitted:
            return []
        for s, encoder in zip(self.streams, self.model.encoders):
            target = last_frame * spf + encoder.lookahead_samples
            s.append(np.zeros(max(0, target - s.end), dtype=np.float32))
        frames = self._advance()
        for s in self.streams:  # the padding was only a stand-in for audio still to come
            s.truncate(last_frame * spf)
        return frames

    def clear(self, streams=("self",)) -> None:
        """Barge-in: drop audio of these streams that no emitted frame has made yet; the
        stream's timeline continues at the next frame."""
        for name in streams:
            self.streams[self._stream_index(name)].truncate(self.frames_emitted * self.cfg.samples_per_frame)

    def reset(self) -> None:
        """Start over: no audio, no history, frame 0."""
        with torch.inference_mode():
            self.step.reset()
        for s in self.streams:
            s.reset()
        self.inputs = [AudioStream(s.format, name=s.name) for s in self.inputs]
        self.frames_emitted = 0
