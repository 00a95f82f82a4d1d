"""The pure helpers of four diagnostic benchmarks: blendshape_geometry.py (where a sweep's
score is lost), voice_probe.py (which property of a voice decides lip closure),
phone_probe_accuracy.py (what the audio encoder hears, per voice) and
closure_breakdown.py (closure per minute and per recording channel)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_follow_ratio_and_leftover():
    geometry = _load("blendshape_geometry")
    rng = np.random.default_rng(0)
    intended = rng.normal(size=(468, 2))
    intended[:100] = 0.0                                   # points the warp leaves alone
    ratio, left = geometry.follow(0.6 * intended, intended)
    assert ratio == pytest.approx(0.6) and left == pytest.approx(0.0, abs=1e-12)
    sideways = np.stack([-intended[:, 1], intended[:, 0]], 1)   # a move at right angles: not followed
    ratio, left = geometry.follow(0.5 * intended + sideways, intended)
    assert ratio == pytest.approx(0.5)
    moved = np.linalg.norm(intended, axis=1) > 0.3
    assert left == pytest.approx(np.linalg.norm(sideways[moved], axis=1).mean())
    assert np.isnan(geometry.follow(intended, np.zeros_like(intended))[0])


def test_blendshape_input_points():
    points = _load("blendshape_geometry").BLENDSHAPE_INPUT_POINTS
    assert len(points) == 146 and len(set(points)) == 146 and list(points) == sorted(points)
    assert set(range(468, 478)) <= set(points) and max(points) == 477   # both irises are read


def test_voice_probe_edits_only_the_bilabials():
    probe = _load("voice_probe")
    sr = probe.SAMPLE_RATE
    audio = np.ones(sr, np.float32)
    phones = [("ah", 0.0, 0.2), ("m", 0.2, 0.3), ("iy", 0.3, 0.6), ("p", 0.6, 0.65), ("s", 0.65, 1.0)]
    quiet = probe.attenuate(audio, phones, -20)
    inside = np.zeros(sr, bool)
    inside[int(0.2 * sr):int(0.3 * sr)] = inside[int(0.6 * sr):int(0.65 * sr)] = True
    assert np.allclose(quiet[inside], 0.1) and np.all(quiet[~inside] == 1.0)
    hum = probe.murmur(0.5 * audio, phones, -6, 150) - 0.5 * audio
    assert np.all(hum[~inside] == 0.0) and np.abs(hum[inside]).max() > 0.1
    with pytest.raises(ValueError, match="silent"):
        probe.murmur(0 * audio, phones, -6, 150)
    slower, moved = probe.resample(np.zeros(sr, np.float32), phones, 0.8)
    assert len(slower) % 640 == 0 and abs(len(slower) - sr / 0.8) <= 640
    assert moved[1] == ("m", pytest.approx(0.25), pytest.approx(0.375))


def test_voice_probe_channel_helpers_and_the_speech_level():
    probe = _load("voice_probe")
    rng = np.random.default_rng(0)
    audio = np.zeros(16000, np.float32)
    audio[4000:12000] = rng.standard_normal(8000).astype(np.float32) * 0.3
    from dystream.data.augment import level_speech

    level = level_speech(audio)                                                # the data engine's levelling
    speech = level[np.abs(audio) > 1e-4]                                       # the samples it levels by
    assert np.sqrt(np.mean(speech ** 2)) == pytest.approx(0.05, rel=1e-4)
    assert level_speech(np.zeros(10, np.float32)).tolist() == [0.0] * 10      # silence as it is
    assert np.array_equal(probe.channel(level), probe.channel(level))           # seeded
    quieter = probe.channel(level, gain_db=-8.0)
    assert np.sqrt(np.mean(quieter[4000:12000] ** 2)) == pytest.approx(0.05 * 10 ** (-8 / 20), rel=0.01)
    noisy = probe.channel(level, snr_db=25.0)
    floor = np.sqrt(np.mean(noisy[:4000] ** 2))                                # silence: noise only
    assert 20 * np.log10(0.05 / floor) == pytest.approx(25.0, abs=0.3)


def test_phone_probe_benchmark_reads_frames_as_training_does(tmp_path):
    """phone_probe_accuracy.py pads a whole track itself; its frame k must be the frame k
    that training's window bank and encoder call give the probe."""
    import torch

    from dystream.generator.config import preset
    from dystream.generator.model import Generator
    from dystream.training.dataset import WindowBank
    from test_training_generator import TINY
    from test_training_standin import make_conversation

    bench = _load("phone_probe_accuracy")
    torch.manual_seed(0)
    model = Generator(preset("small", **TINY, phone_weight=0.1)).eval()
    with torch.no_grad():                        # a probe that is not near-constant
        model.phone_probe.weight.normal_(0, 3.0)
    conv = make_conversation(np.random.default_rng(1), "c", "test", 3.0)
    frames = conv.num_frames
    left, right = model.audio_context()
    bank = WindowBank([conv], frames, left, right)
    self_audio, _, _ = bank.gather(torch.tensor([0]), torch.tensor([1]))
    ctx = model.cfg.encoder_context_frames
    with torch.no_grad():
        expected = model.phone_probe(model.self_encoder(self_audio, ctx + frames)[:, ctx:])[0].argmax(-1).numpy()
    got = bench.track_predictions(model, conv.audio[1], frames)
    assert got.shape == (frames,) and len(set(got.tolist())) > 1
    np.testing.assert_array_equal(got, expected)


def test_closure_breakdown_counts_per_minute_voice_and_track():
    from types import SimpleNamespace

    from dystream.motion import MOTION_DIM, idx

    breakdown = _load("closure_breakdown")
    fps = 25
    motion = np.zeros((130 * fps, MOTION_DIM), np.float32)
    motion[:, idx("jawOpen")] = 0.5                            # open everywhere ...
    motion[int(10.0 * fps):int(10.2 * fps), idx("jawOpen")] = 0.0   # ... but for one closure in minute 0
    phones = [("m", 10.0, 10.1), ("p", 30.0, 30.1), ("b", 70.0, 70.1), ("aa", 10.1, 10.3), ("m", 125.0, 125.1)]
    channel = [{"snr_db": 30.0, "low_hz": 0.0, "high_hz": 0.0}, {"snr_db": 20.0, "low_hz": 200.0, "high_hz": 4000.0}]
    conv = SimpleNamespace(id="c0", voices=["flite:slt", "espeak:x"], extra={"augmentation": str(channel)},
                           labels=[SimpleNamespace(phones=phones), SimpleNamespace(phones=phones[:1])])
    minutes, tracks = breakdown.breakdown([(conv, 0), (conv, 1)], [motion, motion])
    assert minutes[(0, "flite:slt")].tolist() == [1, 2]       # the vowel is not counted
    assert minutes[(1, "flite:slt")].tolist() == [0, 1] and minutes[(2, "flite:slt")].tolist() == [0, 1]
    assert minutes[(0, "all")].tolist() == [2, 3] and minutes[(0, "espeak:x")].tolist() == [1, 1]
    assert tracks[0]["bilabials"] == 4 and tracks[0]["closed"] == 1 and tracks[0]["snr_db"] == 30.0
    assert tracks[1]["high_hz"] == 4000.0 and tracks[1]["closed"] == 1
    assert breakdown.channel_of(SimpleNamespace(extra={}), 0) == {}
