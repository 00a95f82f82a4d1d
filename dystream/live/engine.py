"""The live engine: many sessions share one model, stepped together on a 25 fps clock.

A tick makes one frame for every session whose frame is ready or due: it takes each
session's audio for that frame (its 40 ms plus the lookahead, from both streams), runs
one batched frame step for all sessions (:class:`dystream.generator.sampling.FrameStep`,
masked: the sessions not due compute but keep their state; captured as a CUDA graph per
batch-size bucket on a GPU), one batched decode of their different photos, encodes each
frame as JPEG and hands it to the session's bounded outbox with the self audio it belongs
to.

Timing. A session's frame f covers session time [f, f + 1) x 40 ms. A stream's first
chunk is placed by its arrival time (it ends "now"; a long chunk, e.g. a voice agent's
queued speech, starts at the next frame), every later chunk right after the previous one,
so a client that streams in real time stays aligned and queued speech plays in order.
After a gap (a paused microphone, a stalled network: the stream ran dry before the frames
that read it) the stream is re-placed at the frames to come (``stats["gaps"]``): nothing
that arrives is lost, at the price of the gap's delay. Frame f is *ready* when its
time has come (session time ``(f + 1) x 40 ms + lookahead``) and every stream that has
started holds its samples; it is *due* ``jitter`` later, and then its missing samples are
silence (if they come later, they are too late to count: ``stats["late_samples"]``). A stream that never
sends is a silent partner, and a session with no audio at all still gets its 25 frames a
second (listening to silence).

The clock: a tick runs as soon as every session is ready (one session alone: the moment
its audio is complete, so latency is compute alone), else when the first is due, at most
once per 40 ms (many sessions with audio of every phase share one batched step per frame
period; a session whose audio just missed a tick waits for the next). A session more than
``max_lag_frames`` behind its schedule (the engine overloaded) skips frames: its clock
jumps ahead, the skipped frames are never made (``stats["skipped_frames"]``), so latency
stays bounded. An outbox holds at most ``outbox_frames`` frames: a client that reads too
slowly loses its oldest frames (``stats["dropped_frames"]``), never the server's memory.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from dystream.audio.stream import AudioFormat, AudioStream
from dystream.config import FRAMES_PER_SECOND, OTHER, SAMPLE_RATE, SELF, STREAM_NAMES
from dystream.errors import InputError
from dystream.generator.graphs import GraphedFrameStep, graphs_enabled
from dystream.generator.sampling import FrameStep
from dystream.motion import NAMES
from dystream.pipeline import Avatar, Pipeline

FRAME_S = 1.0 / FRAMES_PER_SECOND
# Seconds of input a session may hold beyond what its next frame reads (a client sending
# faster than real time is refused past it).
MAX_BUFFERED_S = 30.0


@dataclass
class LiveFrame:
    """One frame for a client: the picture, the self audio it belongs to, and when it was made."""

    index: int
    jpeg: bytes
    audio: np.ndarray           # float32 [640]: the self stream's samples of this frame
    motion: np.ndarray | None   # [MOTION_DIM] on the photo, when the session asked for it
    made_at: float              # engine clock
    audio_end_at: float         # when the last sample it needed arrived (or its deadline)
    lookahead_s: float

    def motion_dict(self) -> dict | None:
        """The motion as ARKit-named blendshapes and head pose (JSON-ready)."""
        if self.motion is None:
            return None
        return {name: round(float(v), 5) for name, v in zip(NAMES, self.motion)}


class _Percentiles:
    """p50 / p95 / p99 of the last ``size`` values."""

    def __init__(self, size: int = 1500) -> None:
        self.values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self.values.append(value)

    def summary(self) -> dict:
        if not self.values:
            return {"p50": None, "p95": None, "p99": None, "n": 0}
        v = np.asarray(self.values)
        return {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
                "p99": float(np.percentile(v, 99)), "n": len(v)}


class _InputStream:
    """One stream of a session on its sample timeline (sample 0 = session time 0), with the
    arrival time of every received chunk."""

    def __init__(self, fmt: AudioFormat, name: str, opened_at: float) -> None:
        self.input, self.opened_at = AudioStream(fmt, name=name), opened_at
        self.start = 0                      # timeline index of buffer[0]
        self.buffer = np.zeros(0, np.float32)
        self.started = False
        self.arrivals: deque[tuple[int, float]] = deque()  # (timeline end of a chunk, arrival time)
        self.late_samples = 0
        self.gaps = 0

    @property
    def end(self) -> int:
        return self.start + len(self.buffer)

    def push(self, chunk, now: float, earliest: int) -> None:
        """Add a chunk that arrived at ``now``; ``earliest``: the first sample any frame still to
        be made reads (earlier samples arrive too late to be used)."""
        samples = self.input.convert(chunk)
        if not self.started:  # placed by its arrival (it ends now), but never before the frames to come
            self.started = True
            self.start = max(int(round((now - self.opened_at) * SAMPLE_RATE)) - len(samples), earliest)
            self.buffer = samples
        elif self.end < earliest:  # a gap (a pause, a stall): re-placed at the frames to come
            self.start, self.buffer = earliest, samples
            self.gaps += 1
        else:
            # Samples before ``earliest`` came after the frames that read them were made.
            self.late_samples += max(0, min(self.end + len(samples), earliest) - self.end)
            self.buffer = np.concatenate([self.buffer, samples])
        if self.end - earliest > MAX_BUFFERED_S * SAMPLE_RATE:
            self.buffer = self.buffer[:max(0, earliest + int(MAX_BUFFERED_S * SAMPLE_RATE) - self.start)]
            raise InputError(f"{self.input.name} arrives faster than real time (more than {MAX_BUFFERED_S:.0f} s "
                             "ahead of the frames); send it as it is recorded")
        self.arrivals.append((self.end, now))

    def read(self, begin: int, end: int) -> np.ndarray:
        """Samples [begin, end) of the timeline; what is not here is silence."""
        out = np.zeros(end - begin, np.float32)
        lo, hi = max(begin, self.start), min(end, self.end)
        if hi > lo:
            out[lo - begin: hi - begin] = self.buffer[lo - self.start: hi - self.start]
        return out

    def arrival_of(self, sample: int) -> float | None:
        """When the chunk holding timeline sample ``sample`` arrived (None: not here)."""
        if not self.start <= sample < self.end:
            return None
        ends = [e for e, _ in self.arrivals]
        k = bisect.bisect_right(ends, sample)
        return self.arrivals[k][1] if k < len(self.arrivals) else None

    def forget_before(self, sample: int) -> None:
        """Drop samples before ``sample``: no frame to come reads them."""
        if sample > self.start:
            cut = min(sample - self.start, len(self.buffer))
            self.buffer, self.start = self.buffer[cut:], self.start + cut
            while len(self.arrivals) > 1 and self.arrivals[0][0] <= self.start:
                self.arrivals.popleft()

    def truncate(self, sample: int) -> None:
        """Forget samples at or after ``sample`` (barge-in)."""
        self.buffer = self.buffer[:max(0, sample - self.start)]
        while self.arrivals and self.arrivals[-1][0] > self.end:
            self.arrivals.pop()


class LiveSession:
    """One client's avatar in the engine. Feed audio with ``feed``, take frames from ``outbox``
    (or wait for ``on_frame`` callbacks); ``clear()`` cuts queued speech and frames."""

    def __init__(self, engine: "Engine", session_id: str, avatar: Avatar, seed: int,
                 formats: dict[str, AudioFormat], send_motion: bool, opened_at: float) -> None:
        self.engine, self.id, self.avatar, self.seed = engine, session_id, avatar, seed
        self.send_motion, self.opened_at = send_motion, opened_at
        cfg = engine.model.cfg
        self.inputs = [_InputStream(formats.get(name, AudioFormat()), f"{name} audio", opened_at)
                       for name in STREAM_NAMES]
        self.lookahead = [cfg.lookahead_samples(SELF), cfg.lookahead_samples(OTHER)]
        self.next_frame = 0
        self.outbox: deque[LiveFrame] = deque(maxlen=engine.outbox_frames)
        self.on_frame: Callable[["LiveSession"], None] | None = None
        self.lock = threading.Lock()
        self.closed = False
        self.counts = {"frames": 0, "dropped_frames": 0, "skipped_frames": 0}
        self.compute_latency = _Percentiles()
        self.audio_to_frame = _Percentiles()

    # -- from the client ---------------------------------------------------------------------
    def feed(self, stream: str, chunk, now: float | None = None) -> None:
        """A chunk of "self" or "other" audio in the stream's declared format (bytes or array)."""
        if stream not in STREAM_NAMES:
            raise InputError(f"unknown stream {stream!r}: use 'self' or 'other'")
        now = self.engine.clock() if now is None else now
        with self.lock:
            earliest = self.next_frame * self.engine.samples_per_frame - self.engine.model.cfg.front_left_samples
            self.inputs[STREAM_NAMES.index(stream)].push(chunk, now, earliest)
        if self.ready(now):
            self.engine._wake.set()

    def clear(self) -> None:
        """Barge-in: the self audio not yet made into frames and every frame not yet taken are cut."""
        with self.lock:
            self.inputs[SELF].truncate(self.next_frame * self.engine.samples_per_frame)
            self.outbox.clear()

    def take(self) -> list[LiveFrame]:
        """Every frame waiting in the outbox (oldest first)."""
        with self.lock:
            frames = list(self.outbox)
            self.outbox.clear()
        return frames

    def stats(self) -> dict:
        with self.lock:
            late = sum(s.late_samples for s in self.inputs)
            return {"frames": self.counts["frames"], "dropped_frames": self.counts["dropped_frames"],
                    "skipped_frames": self.counts["skipped_frames"], "late_samples": late,
                    "gaps": sum(s.gaps for s in self.inputs),
                    "queued_frames": len(self.outbox),
                    "compute_latency_ms": _ms(self.compute_latency.summary()),
                    "audio_to_frame_latency_ms": _ms(self.audio_to_frame.summary())}

    # -- for the engine ----------------------------------------------------------------------
    def time_of(self, frame: int) -> float:
        """Engine clock time at which frame ``frame``'s audio (incl. the lookahead) ends."""
        return self.opened_at + (frame + 1) * FRAME_S + max(self.lookahead) / SAMPLE_RATE

    def deadline(self, frame: int) -> float:
        """When frame ``frame`` is made whatever has arrived."""
        return self.time_of(frame) + self.engine.jitter_s

    def ready(self, now: float) -> bool:
        """The next frame's time has come and every started stream holds its samples."""
        if now < self.time_of(self.next_frame):
            return False
        spf, front = self.engine.samples_per_frame, self.engine.model.cfg.front_left_samples
        begin = self.next_frame * spf - front
        return all(not s.started or s.end >= begin + width for s, width in zip(self.inputs, self.engine.windows))

    def take_audio(self, frame: int, windows: list[int], front_left: int, now: float):
        """Both streams' slices for ``frame`` (silence where missing), the frame's own self audio,
        and when its last needed sample arrived."""
        spf = self.engine.samples_per_frame
        slices, arrived = [], []
        for stream, width in zip(self.inputs, windows):
            begin = frame * spf - front_left
            slices.append(stream.read(begin, begin + width))
            at = stream.arrival_of(begin + width - 1)
            arrived.append(now if at is None else at)
        own = self.inputs[SELF].read(frame * spf, (frame + 1) * spf)
        for stream in self.inputs:
            stream.forget_before((frame + 1) * spf - front_left)
        return slices, own, max(arrived)


def _ms(summary: dict) -> dict:
    return {k: (None if v is None else round(v * 1e3, 2)) if k != "n" else v for k, v in summary.items()}


class Engine:
    """Sessions on one device, stepped together. ``open`` / ``close`` from any thread; ``start``
    runs the clock in a thread (or call ``tick`` yourself, e.g. with a fake clock in tests)."""

    def __init__(self, pipeline: Pipeline, *, capacity: int = 8, graphs: bool | None = None,
                 jpeg_quality: int = 85, jitter_ms: float = 20.0, max_lag_frames: int = 3,
                 outbox_frames: int = FRAMES_PER_SECOND, clock: Callable[[], float] = time.monotonic,
                 encode_threads: int = 4, decode_threads: int = 1) -> None:
        if pipeline.autoencoder is None:
            raise InputError("the live engine renders frames: give it a pipeline with an autoencoder")
        self.pipeline, self.model = pipeline, pipeline.model
        self.capacity, self.jpeg_quality = int(capacity), int(jpeg_quality)
        self.jitter_s, self.max_lag_frames, self.outbox_frames = jitter_ms / 1e3, int(max_lag_frames), int(outbox_frames)
        self.clock = clock
        # CPU threads of the decode. One by default: beside the server's event loop and its
        # clients a second decode thread on a small CPU waits for a busy core (on this 2-core
        # machine under one real-time client, 2 threads put 76% of frames on time against
        # 100% with 1: lab/LOG.md). The frame step always runs on one, as offline generation
        # does, so its motion is the offline motion.
        self.decode_threads = max(1, int(decode_threads))
        self.samples_per_frame = self.model.cfg.samples_per_frame
        self.device = self.model.device
        with torch.inference_mode():
            self.step = FrameStep(self.model, np.zeros((0, self.model.cfg.motion_dim)), [], pipeline.sampling,
                                  capacity=self.capacity)
        self.windows = [e.step_samples for e in self.model.encoders]
        self.sessions: list[LiveSession] = []          # row i of the step is sessions[i]
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._appearances = None                        # the decode batch of the current sessions
        self._encoder = ThreadPoolExecutor(max_workers=max(1, encode_threads), thread_name_prefix="jpeg")
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # set when a session's frame becomes ready
        self.tick_time = _Percentiles()
        self.ticks = 0
        use_graphs = graphs_enabled() if graphs is None else graphs
        self.graphs: dict[int, GraphedFrameStep] = {}
        if use_graphs and self.device.type == "cuda":
            self._capture_graphs()

    # -- sessions ----------------------------------------------------------------------------
    def open(self, photo=None, *, avatar: Avatar | None = None, seed: int = 0,
             formats: dict[str, AudioFormat] | None = None, send_motion: bool = False) -> LiveSession:
        """A new session for a photo (HxWx3 uint8 RGB; encoded here) or a prepared avatar."""
        if avatar is None:
            if photo is None:
                raise InputError("give a photo or an avatar")
            avatar = self.pipeline.prepare(photo)
        unknown = set(formats or {}) - set(STREAM_NAMES)
        if unknown:
            raise InputError(f"formats for unknown streams {sorted(unknown)}: use self, other")
        with self._lock:
            if len(self.sessions) >= self.capacity:
                raise InputError(f"this engine is full ({self.capacity} sessions); try again later or "
                                 "another server")
            # Session time starts a lookahead and the jitter allowance before now, so that frame 0
            # is due one frame from now and the first audio lands where the frames to come read it.
            lookahead = max(self.model.cfg.lookahead_samples(SELF), self.model.cfg.lookahead_samples(OTHER))
            origin = self.clock() - lookahead / SAMPLE_RATE - self.jitter_s
            session = LiveSession(self, f"s{next(self._ids)}", avatar, int(seed), dict(formats or {}),
                                  send_motion, origin)
            with torch.inference_mode():
                self.step.add(avatar.anchor, session.seed)
            self.sessions.append(session)
            self._appearances = None
        return session

    def close(self, session: LiveSession) -> None:
        """Remove a session (any time; its frames stop, its memory is freed)."""
        with self._lock:
            if session.closed or session not in self.sessions:
                session.closed = True
                return
            row = self.sessions.index(session)
            with torch.inference_mode():
                moved = self.step.remove(row)
            last = self.sessions.pop()
            if moved is not None:
                self.sessions[row] = last
            session.closed = True
            self._appearances = None

    # -- the clock ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dystream-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._encoder.shutdown(wait=False)

    def _run(self) -> None:
        last_tick = -1.0
        while not self._stop.is_set():
            now = self.clock()
            with self._lock:
                sessions = list(self.sessions)
            if sessions:
                all_ready = all(s.ready(now) for s in sessions)
                any_due = any(now >= s.deadline(s.next_frame) for s in sessions)
                if all_ready or (any_due and now - last_tick >= FRAME_S * 0.95):
                    self.tick(now)
                    last_tick = now
                    continue
                # A session whose time is still to come is checked then; one whose time has come
                # waits for its audio (``feed`` wakes the clock) or for its deadline. Never a
                # wake time in the past: a spinning clock would hold the GIL the server needs
                # to receive that very audio.
                earliest_due = last_tick + FRAME_S * 0.95
                wake = min(s.time_of(s.next_frame) if s.time_of(s.next_frame) > now
                           else max(s.deadline(s.next_frame), earliest_due) for s in sessions)
            else:
                wake = now + FRAME_S
            self._wake.wait(max(0.0, min(wake - now, FRAME_S)))
            self._wake.clear()

    def tick(self, now: float | None = None) -> int:
        """Make the next frame of every session that is ready or due; returns how many."""
        started = self.clock() if now is None else now
        with self._lock:
            due = []
            for row, session in enumerate(self.sessions):
                with session.lock:
                    behind = int((started - session.deadline(session.next_frame)) / FRAME_S)
                    if behind > self.max_lag_frames:  # skip frames: latency stays bounded
                        session.counts["skipped_frames"] += behind
                        session.next_frame += behind
                if session.ready(started) or started >= session.deadline(session.next_frame):
                    due.append(row)
            if not due:
                return 0
            count = len(self.sessions)
            audio_rows = [np.zeros((count, w), np.float32) for w in self.windows]
            own, arrivals = [None] * count, [started] * count
            front = self.model.cfg.front_left_samples
            for row in due:
                session = self.sessions[row]
                with session.lock:
                    slices, own[row], arrivals[row] = session.take_audio(session.next_frame, self.windows, front,
                                                                         started)
                for buffer, values in zip(audio_rows, slices):
                    buffer[row] = values
            motion = self._step(audio_rows, count, due)
            made = self._render(motion, due, own, arrivals)
            self.ticks += 1
        self.tick_time.add(self.clock() - started)
        return made

    def _step(self, audio_rows: list[np.ndarray], count: int, due: list[int]) -> torch.Tensor:
        """One batched frame step of the sessions' rows; the rows not due compute but keep their state."""
        from dystream.generator.offline import cpu_threads

        step = self.step
        with torch.inference_mode(), cpu_threads(self.device, 1):  # as offline: a row's motion alone = in a batch
            advance = torch.zeros(self.capacity, dtype=torch.bool)
            advance[due] = True
            step.advance.copy_(advance, non_blocking=True)
            for buffer, values in zip(step._audio, audio_rows):
                buffer[:count].copy_(torch.from_numpy(values), non_blocking=True)
            bucket = next((b for b in sorted(self.graphs) if b >= count), None)
            if bucket is not None:
                motion = self.graphs[bucket]()[:count]
            else:  # eager: every row due (the usual case) needs no mask
                motion = step(count, masked=len(due) < count)
            return motion.clone()

    def _render(self, motion: torch.Tensor, due: list[int], own: list, arrivals: list) -> int:
        """Decode the due sessions' frames in one batch, JPEG-encode them in parallel, deliver."""
        from dystream.autoencoder.mesh.decoder import AppearanceBatch

        if self._appearances is None:
            self._appearances = AppearanceBatch.stack([s.avatar.appearance for s in self.sessions])
        offsets = torch.as_tensor(np.stack([s.avatar.photo_motion - s.avatar.anchor for s in self.sessions]),
                                  device=self.device, dtype=motion.dtype)
        from dystream.motion import LOWER, UPPER

        on_photo = torch.maximum(torch.minimum(motion + offsets, torch.as_tensor(UPPER, device=self.device)),
                                 torch.as_tensor(LOWER, device=self.device))
        from dystream.generator.offline import cpu_threads

        decoder = self.pipeline.autoencoder.decoder
        with torch.inference_mode(), cpu_threads(self.device, self.decode_threads):
            crops = decoder.render_batch(self._appearances, on_photo[:, None].to(self._appearances.image.dtype))
            pixels = crops[:, 0].clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
        motions = on_photo.float().cpu().numpy()
        quality = self.jpeg_quality
        jpegs = list(self._encoder.map(lambda row: _jpeg(pixels[row], quality), due))
        now = self.clock()
        for row, jpeg in zip(due, jpegs):
            session = self.sessions[row]
            with session.lock:
                frame = LiveFrame(session.next_frame, jpeg, own[row],
                                  motions[row] if session.send_motion else None, now, arrivals[row],
                                  max(session.lookahead) / SAMPLE_RATE)
                if len(session.outbox) == session.outbox.maxlen:
                    session.counts["dropped_frames"] += 1
                session.outbox.append(frame)
                session.counts["frames"] += 1
                session.next_frame += 1
                session.compute_latency.add(now - frame.audio_end_at)
                session.audio_to_frame.add(now - frame.audio_end_at + frame.lookahead_s)
            if session.on_frame is not None:
                session.on_frame(session)
        return len(due)

    def _capture_graphs(self) -> None:
        """One CUDA graph per batch-size bucket (1, 2, 4, ... up to the capacity), captured once
        with no session open."""
        bucket = 1
        with torch.inference_mode():
            for anchor in range(self.capacity):  # placeholder streams so every row is live
                self.step.add(np.zeros(self.model.cfg.motion_dim, np.float32), 0)
            while True:
                size = min(bucket, self.capacity)
                self.graphs[size] = GraphedFrameStep(self.step, streams=size, masked=True)
                if size == self.capacity:
                    break
                bucket *= 2
            while self.step.active:
                self.step.remove(self.step.active - 1)

    def stats(self) -> dict:
        return {"sessions": len(self.sessions), "capacity": self.capacity, "ticks": self.ticks,
                "graphs": sorted(self.graphs), "device": str(self.device),
                "tick_ms": _ms(self.tick_time.summary())}


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    import simplejpeg

    return simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB")
