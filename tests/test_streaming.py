import numpy as np
import pytest
import torch

from dystream.errors import InputError
from dystream.generator.offline import generate_motion
from dystream.streaming import StreamingSession

from generator_helpers import single_thread  # noqa: F401  (autouse fixture)
from generator_helpers import anchor_frame, feed_interleaved, speech_like, tiny_generator

SPF = 640


def _chunkings(total: int, rng: np.random.Generator, count: int):
    """Chunk size lists: 1-sample chunks over the first second, one single chunk, random sizes."""
    yield [1] * 16000 + [total - 16000]
    yield [total]
    for _ in range(count - 2):
        sizes, left = [], total
        scale = rng.choice([50, 700, 5000])
        while left > 0:
            n = int(min(left, rng.integers(1, scale + 1)))
            sizes.append(n)
            left -= n
        yield sizes


def _worst_streaming_difference(model, self_audio, other_audio, anchor, seed, rng, chunkings) -> float:
    """Max |streaming - offline| of motion over ``chunkings`` chunkings of both streams (each
    run emits every frame, in order)."""
    offline = generate_motion(model, self_audio, other_audio, anchor, seed=seed)
    session = StreamingSession(model, anchor, seed=seed)
    worst = 0.0
    for sizes in _chunkings(len(self_audio), rng, chunkings):
        session.reset()
        other_sizes = next(_chunkings(len(other_audio), rng, 3)) if len(sizes) == 1 else sizes[::-1]
        out = feed_interleaved(session, self_audio, other_audio, sizes, other_sizes, rng)
        assert [f.index for f in out] == list(range(len(offline)))
        worst = max(worst, float(np.abs(np.stack([f.motion for f in out]) - offline).max()))
    return worst


@pytest.mark.parametrize("lookaheads, options", [((60, 60), {}), ((0, 120), {}), ((60, 60), {"pose_relative": True}),
                                                  ((80, 60), {"front_warps": (0.8, 1.0, 1.25)})])
def test_streaming_equals_offline_for_any_chunking(lookaheads, options):
    model = tiny_generator(self_lookahead_ms=lookaheads[0], other_lookahead_ms=lookaheads[1], **options)
    rng = np.random.default_rng(0)
    frames = 75  # 3 s
    self_audio, other_audio = speech_like(frames * SPF, 1), speech_like(frames * SPF, 2)
    assert _worst_streaming_difference(model, self_audio, other_audio, anchor_frame(3), 11, rng, 5) <= 1e-5


@pytest.mark.parametrize("threads", [1, 2])
def test_the_bundled_weights_stream_exactly_as_offline_at_any_thread_count(threads):
    """Trained weights amplify float rounding (~1e-5 in motion from one rounding step): the CPU
    runs the audio encoders in float64 (a whole clip and one frame then give the same float32
    features) and every frame step on one torch thread, whatever the caller's setting, so a
    stream's motion is the offline motion bit for bit."""
    from dystream.generator.weights import load_generator

    torch.set_num_threads(threads)
    model = load_generator(None, "cpu")
    assert model.self_encoder.compute_dtype == torch.float64
    rng = np.random.default_rng(5)
    frames = 100  # 4 s
    self_audio, other_audio = speech_like(frames * SPF, 6), speech_like(frames * SPF, 7)
    assert _worst_streaming_difference(model, self_audio, other_audio, anchor_frame(2), 4, rng, 3) == 0.0


def test_a_frame_leaves_as_soon_as_its_audio_and_lookahead_arrive():
    model = tiny_generator(self_lookahead_ms=60, other_lookahead_ms=20)
    session = StreamingSession(model, anchor_frame())
    audio = speech_like(20 * SPF, 5)
    frame = 7
    need_self, need_other = (frame + 1) * SPF + 960, (frame + 1) * SPF + 320
    assert session.feed("other", audio[:need_other]) == []
    assert len(session.feed("self", audio[: need_self - 1])) == frame  # one sample short of frame 7
    out = session.feed("self", audio[need_self - 1: need_self])
    assert [f.index for f in out] == [frame]


def test_flush_pads_with_silence_and_the_stream_goes_on():
    model = tiny_generator()
    anchor = anchor_frame()
    audio = speech_like(30 * SPF, 6)
    session = StreamingSession(model, anchor, seed=2)
    first = session.feed("self", audio[: 10 * SPF + 100]) + session.feed("other", np.zeros(10 * SPF))
    first += session.flush()
    assert [f.index for f in first] == list(range(11))  # the partial 11th frame is completed with silence
    # Up to the flush, the output is that of the audio followed by silence.
    padded = np.concatenate([audio[: 10 * SPF + 100], np.zeros(SPF - 100, np.float32)])
    offline = generate_motion(model, padded, None, anchor, seed=2)
    assert np.abs(np.stack([f.motion for f in first]) - offline).max() <= 1e-5
    later = session.feed("self", audio[: 5 * SPF]) + session.feed("other", np.zeros(6 * SPF)) + session.flush()
    # The partner stream reached one frame further: that frame is made too, self silent in it.
    assert [f.index for f in later] == list(range(11, 17))
    assert session.flush() == []


def test_clear_drops_queued_audio_that_no_frame_has_used():
    model = tiny_generator(self_lookahead_ms=60)
    anchor = anchor_frame()
    base = speech_like(40 * SPF, 7)
    new_audio = speech_like(20 * SPF, 8)
    results = []
    for junk_seed in (1, 2):
        session = StreamingSession(model, anchor, seed=4)
        queued = base.copy()
        queued[10 * SPF + 960:] = speech_like(len(base) - 10 * SPF - 960, junk_seed)  # differs only where unused
        emitted = session.feed("self", queued) + session.feed("other", np.zeros(10 * SPF + 960, np.float32))
        assert len(emitted) == 10
        session.clear(["self"])
        after = session.feed("self", new_audio) + session.feed("other", np.zeros(20 * SPF, np.float32))
        after += session.flush()
        assert [f.index for f in after][:1] == [10]
        results.append(np.stack([f.motion for f in emitted + after]))
    assert np.array_equal(results[0], results[1])


def test_reset_starts_over_and_bad_input_is_rejected():
    model = tiny_generator()
    audio = speech_like(8 * SPF, 9)
    session = StreamingSession(model, anchor_frame(), seed=5)
    first = session.feed("self", audio) + session.feed("other", audio) + session.flush()
    session.reset()
    second = session.feed("other", audio) + session.feed("self", audio) + session.flush()
    assert np.array_equal(np.stack([f.motion for f in first]), np.stack([f.motion for f in second]))
    with pytest.raises(InputError, match="unknown stream"):
        session.feed("partner", audio)
    with pytest.raises(InputError, match="NaN"):
        session.feed("self", np.array([np.nan], np.float32))
    with pytest.raises(InputError, match="anchor must have"):
        StreamingSession(model, anchor_frame()[:5])


class _FlatRenderer:
    """Stands in for an autoencoder: paints each frame with its jawOpen value."""

    def __call__(self, motion):
        value = (np.clip(motion[:, 0], 0, 1) * 255).astype(np.uint8)
        return np.broadcast_to(value[:, None, None, None], (len(motion), 4, 4, 3))


def test_frames_are_moved_onto_the_photo_and_rendered():
    model = tiny_generator()
    plain = StreamingSession(model, anchor_frame())
    offset = np.zeros_like(anchor_frame())
    offset[0] = 0.25
    session = StreamingSession(model, anchor_frame(), to_photo=lambda m: m + offset, render=_FlatRenderer())
    audio = speech_like(6 * SPF, 10)
    raw = plain.feed("other", audio) + plain.feed("self", audio) + plain.flush()
    frames = session.feed("other", audio) + session.feed("self", audio) + session.flush()
    assert len(frames) == 6
    for f, r in zip(frames, raw):
        assert np.array_equal(f.motion, r.motion + offset)
        assert f.image.shape == (4, 4, 3) and f.image.dtype == np.uint8
        assert f.image[0, 0, 0] == int(np.clip(f.motion[0], 0, 1) * 255)


@pytest.mark.slow
def test_full_size_small_preset_streaming_equals_offline():
    """At full size: the small preset (random weights that move), 3 clips x 10 s, 6 chunkings each
    (1-sample chunks over the first second, one chunk, random sizes)."""
    from dystream.generator.config import preset
    from generator_helpers import active_random_generator

    model = active_random_generator(preset("small"))
    rng = np.random.default_rng(1)
    for clip in range(3):
        a, b = speech_like(160000, 2 * clip), speech_like(160000, 2 * clip + 1)
        assert _worst_streaming_difference(model, a, b, anchor_frame(clip), clip, rng, 6) <= 1e-5
