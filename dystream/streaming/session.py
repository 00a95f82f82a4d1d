"""A streaming session: two live audio streams in, motion (and rendered) frames out.

Each stream keeps a sample buffer on a timeline that starts ``front_left_samples``
before frame 0 with silence (the same zeros the offline path pads with). Frame f
of a stream's features can be computed as soon as the samples up to
``640 * (f + 1) + lookahead`` have arrived; motion frame f is sampled as soon as
both streams have features for it. So a frame leaves the session one lookahead
after its audio ends, whatever the chunk sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dystream.config import OTHER, SELF, STREAM_NAMES
from dystream.errors import InputError
from dystream.generator.inference import Rollout
from dystream.generator.model import Generator
from dystream.generator.retarget import to_photo


@dataclass
class StreamFrame:
    index: int
    motion: np.ndarray  # [MOTION_DIM] raw motion units
    image: np.ndarray | None = None  # [H, W, 3] uint8 when the session renders


class _StreamInput:
    """One audio stream: its sample buffer, encoder state and ready features."""

    def __init__(self, encoder, front_left: int, samples_per_frame: int, device, dtype) -> None:
        self.encoder, self.front_left, self.spf = encoder, front_left, samples_per_frame
        self.device, self.dtype = device, dtype
        self.reset()

    def reset(self, first_frame: int = 0) -> None:
        # buffer[0] is timeline sample `self.start`; frame f's slice starts at f*spf - front_left.
        self.start = first_frame * self.spf - self.front_left
        self.buffer = np.zeros(self.front_left, dtype=np.float32)
        self.state = self.encoder.initial_state(1, self.device)
        self.next_frame = first_frame
        # (features of a frame, encoder state before it): the state lets clear() roll back.
        self.ready: list[tuple[torch.Tensor, list[torch.Tensor]]] = []

    @property
    def received_end(self) -> int:
        """Timeline index one past the last received sample."""
        return self.start + len(self.buffer)

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            self.buffer = np.concatenate([self.buffer, samples])

    def run(self) -> None:
        """Compute features for every frame whose audio (incl. lookahead) is complete."""
        width = self.encoder.step_samples
        while True:
            offset = self.next_frame * self.spf - self.front_left - self.start
            if offset + width > len(self.buffer):
                return
            window = torch.from_numpy(self.buffer[offset: offset + width])[None].to(self.device, self.dtype)
            before = self.state
            features, self.state = self.encoder.step(window, self.state)
            self.ready.append((features[:, 0], before))
            self.next_frame += 1
            # Keep the audio of frames not yet emitted (clear() may roll back to them).
            drop = (self.next_frame - len(self.ready)) * self.spf - self.front_left - self.start
            if drop > 4 * width:  # trim now and then, not on every frame
                self.buffer = self.buffer[drop:]
                self.start += drop

    def truncate(self, timeline_end: int) -> None:
        """Forget samples at or after ``timeline_end`` (not yet used by any emitted frame)."""
        keep = max(0, timeline_end - self.start)
        self.buffer = self.buffer[:keep]


class StreamingSession:
    """Feed audio of either stream in chunks of any size; receive frames as soon as possible.

    ``feed(stream, samples)`` returns the frames completed by that chunk (usually 0 or 1).
    ``flush()`` ends an utterance: it pads the missing lookahead (and a partial last
    frame) with silence, emits every frame that covers received audio, and then lets
    new audio continue from the next frame. ``clear(...)`` drops audio not yet turned
    into frames (barge-in: the agent's queued speech is cancelled). ``reset()`` starts over.
    With an ``autoencoder`` and ``appearance``, frames also carry a rendered image;
    given the photo's own motion ``photo_motion`` (m0), the image shows m0 plus the
    generated movement relative to ``anchor`` (see :mod:`dystream.generator.retarget`).
    """

    def __init__(self, model: Generator, anchor, *, steps: int = 5, seed: int = 0, guidance=None,
                 pose_guidance=None, autoencoder=None, appearance=None, photo_motion=None) -> None:
        if (autoencoder is None) != (appearance is None):
            raise InputError("give both an autoencoder and an appearance to render, or neither")
        self.render_offset = None
        if photo_motion is not None:
            self.render_offset = (np.asarray(anchor, np.float32), np.asarray(photo_motion, np.float32))
        self.model = model.eval()
        self.cfg = model.cfg
        self.device, self.dtype = model.device, model.dtype
        self.autoencoder, self.appearance = autoencoder, appearance
        with torch.inference_mode():
            self.rollout = Rollout(model, anchor, steps=steps, seed=seed, guidance=guidance,
                                   pose_guidance=pose_guidance)
        self.streams = (
            _StreamInput(model.self_encoder, self.cfg.front_left_samples, self.cfg.samples_per_frame,
                         self.device, self.dtype),
            _StreamInput(model.other_encoder, self.cfg.front_left_samples, self.cfg.samples_per_frame,
                         self.device, self.dtype),
        )
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
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(samples)):
            raise InputError("audio chunk contains NaN or infinite samples")
        self.streams[self._stream_index(stream)].append(samples)
        return self._advance()

    def feed_self(self, samples) -> list[StreamFrame]:
        return self.feed(SELF, samples)

    def feed_other(self, samples) -> list[StreamFrame]:
        return self.feed(OTHER, samples)

    def _advance(self) -> list[StreamFrame]:
        out = []
        with torch.inference_mode():
            for stream in self.streams:
                stream.run()
            a, b = self.streams
            while a.ready and b.ready:
                motion = self.rollout.step(a.ready.pop(0)[0], b.ready.pop(0)[0])
                out.append(StreamFrame(self.frames_emitted, motion.float().cpu().numpy()))
                self.frames_emitted += 1
            if out and self.autoencoder is not None:
                motions = np.stack([f.motion for f in out])
                if self.render_offset is not None:
                    motions = to_photo(motions, *self.render_offset)
                images = self.autoencoder.decode(self.appearance, torch.from_numpy(motions))
                for frame, image in zip(out, images):
                    frame.image = np.asarray(image.cpu() if hasattr(image, "cpu") else image)
        return out

    # -- utterance control ---------------------------------------------------
    def flush(self) -> list[StreamFrame]:
        """Emit every frame that covers received audio, assuming silence after it."""
        spf = self.cfg.samples_per_frame
        ends = [max(0, s.received_end) for s in self.streams]
        last_frame = max(-(-end // spf) for end in ends)  # frames touched by any received sample
        if last_frame <= self.frames_emitted:
            return []
        for s in self.streams:
            target = last_frame * spf + s.encoder.lookahead_samples
            s.append(np.zeros(max(0, target - s.received_end), dtype=np.float32))
        frames = self._advance()
        for s in self.streams:  # the padding was only a stand-in for audio still to come
            s.truncate(last_frame * spf)
        return frames

    def clear(self, streams=("self",)) -> None:
        """Barge-in: drop audio of these streams that no emitted frame has used yet.

        The stream's timeline continues at the next frame; features already computed
        for frames not yet emitted are recomputed from the new audio.
        """
        for name in streams:
            s = self.streams[self._stream_index(name)]
            keep_to = self.frames_emitted * self.cfg.samples_per_frame
            if s.ready:
                # Features of frames not yet emitted may have read dropped audio: roll the
                # encoder back to its state before the first of them.
                s.state = s.ready[0][1]
                s.ready.clear()
                s.next_frame = self.frames_emitted
            s.truncate(keep_to)

    def reset(self) -> None:
        """Start over: no audio, no history, frame 0."""
        with torch.inference_mode():
            self.rollout.reset()
        for s in self.streams:
            s.reset()
        self.frames_emitted = 0


def feed_interleaved(session: StreamingSession, self_audio, other_audio, self_sizes, other_sizes,
                     rng: np.random.Generator) -> list[StreamFrame]:
    """Feed both streams in chunks of the given sizes, interleaved in a random order, then flush.

    How a live call delivers audio (two streams, arbitrary packet sizes, arbitrary arrival
    order); used by the streaming == offline tests and benchmark.
    """
    frames: list[StreamFrame] = []
    queues = [list(self_sizes), list(other_sizes)]
    positions = [0, 0]
    audio = (self_audio, other_audio)
    while queues[0] or queues[1]:
        stream = int(rng.integers(2)) if queues[0] and queues[1] else (0 if queues[0] else 1)
        n = queues[stream].pop(0)
        frames += session.feed(stream, audio[stream][positions[stream]: positions[stream] + n])
        positions[stream] += n
    frames += session.flush()
    return frames

