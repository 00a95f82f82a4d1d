"""Live audio taken only as declared: encodings, rates, channels, and clear refusals."""

import numpy as np
import pytest

from dystream.audio.stream import AudioFormat, AudioStream
from dystream.config import SAMPLE_RATE, SAMPLES_PER_FRAME
from dystream.errors import InputError
from dystream.streaming import StreamingSession

from generator_helpers import single_thread  # noqa: F401  (autouse fixture)
from generator_helpers import anchor_frame, speech_like, tiny_generator


def test_pcm16_bytes_and_arrays_convert_to_the_same_floats():
    audio = speech_like(SAMPLE_RATE // 10, 1)
    pcm = np.round(audio * 32767).astype(np.int16)
    stream = AudioStream(AudioFormat("pcm16"))
    from_bytes = stream.convert(pcm.astype("<i2").tobytes())
    from_array = stream.convert(pcm)
    np.testing.assert_array_equal(from_bytes, from_array)
    np.testing.assert_allclose(from_bytes, audio, atol=1 / 32768 + 1e-6)
    floats = AudioStream().convert(audio.astype("<f4").tobytes())
    np.testing.assert_array_equal(floats, audio)


def test_stereo_is_mixed_down_and_other_rates_resampled_across_chunks():
    rate = 48_000
    t = np.arange(rate) / rate
    left, right = 0.3 * np.sin(2 * np.pi * 220 * t), 0.1 * np.sin(2 * np.pi * 330 * t)
    interleaved = np.stack([left, right], 1).astype(np.float32)
    stream = AudioStream(AudioFormat("float32", rate, 2))
    pieces = [stream.convert(interleaved[i:i + 777].reshape(-1)) for i in range(0, rate, 777)] + [stream.flush()]
    out = np.concatenate(pieces)
    assert abs(len(out) - SAMPLE_RATE) <= 1  # one second at 16 kHz
    import soxr

    whole = soxr.resample(((left + right) / 2).astype(np.float32), rate, SAMPLE_RATE)
    assert np.abs(out[:len(whole)] - whole[:len(out)]).max() < 1e-3


@pytest.mark.parametrize("fmt, chunk, message", [
    (AudioFormat("float32"), np.zeros(10, np.int16), "declared float32, got int16"),
    (AudioFormat("pcm16"), np.zeros(10, np.float32), "declared pcm16, got float32"),
    (AudioFormat("pcm16"), b"\x00\x01\x02", "not a whole number"),
    (AudioFormat("float32", channels=2), np.zeros(7, np.float32), "not a whole number of 2-channel"),
    (AudioFormat("float32"), np.array([0.1, np.nan], np.float32), "NaN"),
    (AudioFormat("float32"), np.array([1200.0, -300.0], np.float32), "must lie in"),
    (AudioFormat("float32"), np.zeros((4, 2), np.float32), "has 2 channels"),
])
def test_undeclared_audio_is_refused(fmt, chunk, message):
    with pytest.raises(InputError, match=message):
        AudioStream(fmt).convert(chunk)


@pytest.mark.parametrize("kwargs, message", [({"encoding": "mp3"}, "encoding"), ({"sample_rate": 3}, "sample rate"),
                                             ({"sample_rate": 10_000_000}, "sample rate"), ({"channels": 0}, "channels"),
                                             ({"sample_rate": 16000.5}, "sample rate")])
def test_absurd_formats_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        AudioFormat(**kwargs)


def test_a_session_takes_declared_pcm16_at_48k_as_the_same_speech():
    """The same speech as 16 kHz floats or as 48 kHz PCM16 chunks: the same number of frames and
    nearly the same motion (not int16 values read as floats, not three times the frames)."""
    model = tiny_generator(seed=1)
    speech = speech_like(40 * SAMPLES_PER_FRAME, 3)
    import soxr

    pcm48 = np.round(soxr.resample(speech, SAMPLE_RATE, 48_000) * 32767).astype(np.int16)
    plain = StreamingSession(model, anchor_frame())
    declared = StreamingSession(model, anchor_frame(), formats={"self": AudioFormat("pcm16", 48_000)})
    a = plain.feed("self", speech) + plain.feed("other", np.zeros(len(speech), np.float32)) + plain.flush()
    b = []
    for i in range(0, len(pcm48), 4801):
        b += declared.feed("self", pcm48[i:i + 4801].tobytes())
    b += declared.feed("other", np.zeros(len(speech), np.float32)) + declared.flush()
    assert len(a) == len(b) == 40
    corr = np.corrcoef(np.stack([f.motion[0] for f in a]), np.stack([f.motion[0] for f in b]))[0, 1]
    assert corr > 0.95
    with pytest.raises(InputError, match="declared pcm16"):
        declared.feed("self", speech)
    with pytest.raises(InputError, match="unknown streams"):
        StreamingSession(model, anchor_frame(), formats={"partner": AudioFormat()})
