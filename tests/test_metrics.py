"""The measuring functions return known answers on constructed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dystream.config import FRAMES_PER_SECOND, SAMPLES_PER_FRAME
from dystream.errors import InputError
from dystream.metrics import events as ev
from dystream.motion import MOTION_DIM, REST, idx

FPS = FRAMES_PER_SECOND


def _rest(frames: int) -> np.ndarray:
    return np.tile(REST, (frames, 1)).astype(np.float32)


def _audio_from_envelope(envelope: np.ndarray) -> np.ndarray:
    """Audio whose per-frame RMS equals ``envelope`` exactly (a +/-a square wave)."""
    signs = np.where(np.arange(SAMPLES_PER_FRAME) % 2 == 0, 1.0, -1.0)
    return (envelope[:, None] * signs[None, :]).reshape(-1).astype(np.float32)


def test_lip_aperture_formula():
    m = _rest(4)
    # 0.02 + 0.5 (0.01 + 0.01) - 0 - 0.5 * 0.02 - 0.5 (0.01 + 0.01)
    assert ev.lip_aperture(m) == pytest.approx(np.full(4, 0.01), abs=1e-6)
    m[1, idx("jawOpen")] = 0.5
    m[1, idx("mouthLowerDownLeft")] = m[1, idx("mouthLowerDownRight")] = 0.3
    m[2, idx("mouthClose")] = 0.2
    m[2, idx("mouthPressLeft")] = m[2, idx("mouthPressRight")] = 0.3
    m[3, idx("mouthRollLower")] = 0.4
    a = ev.lip_aperture(m)
    assert a[1] == pytest.approx(0.5 + 0.5 * (0.3 + 0.01) - 0.0 - 0.01 - 0.01, abs=1e-6)
    assert a[2] == pytest.approx(0.02 + 0.01 - 0.2 - 0.15 - 0.01, abs=1e-6)
    assert a[3] == pytest.approx(0.02 + 0.01 - 0.01 - 0.5 * (0.4 + 0.01), abs=1e-6)
    with pytest.raises(InputError):
        ev.lip_aperture(np.zeros((3, MOTION_DIM + 1)))


def test_bilabial_closure_known_rate():
    m = _rest(100)
    m[:, idx("jawOpen")] = 0.4  # open everywhere ...
    for frame in (20, 50):       # ... except at two of the three bilabials
        m[frame, idx("jawOpen")] = 0.02
    phones = [["aa", 0.0, 0.8], ["p", 0.8, 0.88], ["aa", 0.88, 1.9], ["M", 1.9, 2.04],
              ["b", 3.0, 3.1], ["aa", 3.1, 3.5]]
    # p: frames 20-22 (closed at 20); m: frames 47-51 (closed at 50); b: 71-77 (open).
    assert ev.bilabial_closure_counts(m, phones) == (2, 3)
    assert ev.bilabial_closure_rate(m, phones) == pytest.approx(2 / 3)
    # The lookback catches a closure just before the acoustic bilabial, not long before.
    m[73, idx("jawOpen")] = 0.02  # 3 frames = 120 ms before b starts at frame 75
    phones[4] = ["b", 3.0 + 0.04 * 2, 3.1]
    assert ev.bilabial_closure_rate(m, phones) == 1.0
    assert ev.bilabial_closure_rate(m, phones, lookback_s=0.0) == pytest.approx(2 / 3)
    assert math.isnan(ev.bilabial_closure_rate(m, [["aa", 0.0, 1.0]]))


def test_jaw_open_correlation_known_values():
    rng = np.random.default_rng(0)
    ref = _rest(200)
    ref[:, idx("jawOpen")] = rng.uniform(0, 0.5, 200)
    speaking = np.zeros(200, bool)
    speaking[50:150] = True
    assert ev.jaw_open_correlation(ref, ref, speaking) == pytest.approx(1.0)
    flipped = ref.copy()
    flipped[:, idx("jawOpen")] = 0.5 - ref[:, idx("jawOpen")]
    assert ev.jaw_open_correlation(flipped, ref, speaking) == pytest.approx(-1.0)
    # Only speaking frames count: garbage elsewhere changes nothing.
    noisy = ref.copy()
    noisy[~speaking, idx("jawOpen")] = rng.uniform(0, 1, (~speaking).sum())
    assert ev.jaw_open_correlation(noisy, ref, speaking) == pytest.approx(1.0)
    assert math.isnan(ev.jaw_open_correlation(_rest(200), ref, speaking))  # constant prediction


@pytest.mark.parametrize("lead", [3, 0, -2])
def test_envelope_mouth_offset_finds_the_shift(lead):
    rng = np.random.default_rng(1)
    frames = 400
    # A smooth random envelope, so neighbouring lags correlate but one is best.
    envelope = np.convolve(rng.uniform(0, 1, frames + 20), np.ones(3) / 3, mode="same")[10:-10]
    m = _rest(frames)
    # Mouth at frame t shows the sound of frame t + lead: the mouth leads by `lead`.
    m[:, idx("jawOpen")] = np.roll(envelope, -lead)
    assert ev.envelope_mouth_offset(_audio_from_envelope(envelope), m) == lead


def test_frame_rms_known():
    envelope = np.array([0.0, 0.1, 0.5])
    assert ev.frame_rms(_audio_from_envelope(envelope)) == pytest.approx(envelope)
    assert ev.frame_rms(np.ones(700), 3) == pytest.approx([1.0, math.sqrt(60 / 640), 0.0])


def _nod_pitch(frames, times, amplitudes_deg, background=None):
    pitch = np.zeros(frames) if background is None else background.copy()
    t = (np.arange(frames) + 0.5) / FPS
    for when, amp in zip(times, amplitudes_deg):
        u = t - when
        width = np.where(u < 0, 0.25, 0.35)
        pitch += np.where(np.abs(u) < width, math.radians(amp) * 0.5 * (1 + np.cos(np.pi * u / width)), 0)
    return pitch


def test_detect_nods_known_times_and_amplitudes():
    times = [2.0, 5.3, 9.71, 14.2]
    pitch = _nod_pitch(500, times, [3.0, 2.0, 4.0, 2.5])
    nods = ev.detect_nods(pitch)
    assert len(nods) == 4
    assert nods[:, 0] == pytest.approx(times, abs=0.02)
    # Amplitudes are of the band-passed pitch: smaller than the raw nod, same order.
    assert np.all(nods[:, 1] > 0.4 * np.radians([3.0, 2.0, 4.0, 2.5]))
    assert list(np.argsort(nods[:, 1])) == [1, 3, 0, 2]
    # Same from a whole motion array.
    m = _rest(500)
    m[:, idx("pitch")] = pitch + math.radians(4)  # a tilted neutral pose does not matter
    assert ev.detect_nods(m)[:, 0] == pytest.approx(times, abs=0.02)


def test_detect_nods_ignores_slow_sway_and_tiny_bobs():
    t = (np.arange(1500) + 0.5) / FPS
    sway = math.radians(5.0) * np.sin(2 * np.pi * 0.1 * t)
    assert len(ev.detect_nods(sway)) == 0
    assert len(ev.detect_nods(_nod_pitch(1500, [5, 20, 40], [0.4, 0.4, 0.4]))) == 0
    # A real nod on top of the sway is still found.
    both = _nod_pitch(1500, [30.0], [3.0], background=sway)
    assert ev.detect_nods(both)[:, 0] == pytest.approx([30.0], abs=0.04)


def test_nod_timing_known_answer():
    frames = 60 * FPS  # one minute
    listening = np.ones(frames, bool)
    listening[: 30 * FPS] = False  # self speaks during the first half
    ends = [5.0, 32.0, 40.0, 50.0]  # the first falls while self speaks
    nods = [5.3, 32.25, 40.5, 52.0, 55.0]
    result = ev.nod_timing(np.array(nods), ends, listening)
    assert result["listening_minutes"] == pytest.approx(0.5)
    assert result["nods"] == 4
    assert result["rate_per_minute"] == pytest.approx(8.0)
    assert result["phrase_ends"] == 3
    assert result["delays_s"] == pytest.approx([0.25, 0.5])  # 52.0 is 2 s after 50.0: no answer
    assert result["response_rate"] == pytest.approx(2 / 3)


def test_pose_drift_known_answer():
    m = _rest(5 * 60 * FPS)
    neutral = REST.copy()
    neutral[idx("yaw")] = math.radians(2.0)
    m[:, idx("yaw")] = math.radians(10.0)                 # far away early on ...
    m[-60 * FPS:, idx("yaw")] = math.radians(5.0)        # ... 3 degrees off in the last minute
    m[-60 * FPS:, idx("pitch")] = math.radians(1.0)
    assert ev.pose_drift_degrees(m, neutral) == pytest.approx(3.0, abs=1e-4)
    assert ev.pose_drift_degrees(m, neutral, window_s=300) == pytest.approx(
        abs(0.8 * 10 + 0.2 * 5 - 2), abs=1e-3)


def test_rms_baseline_moves_only_the_jaw():
    envelope = np.concatenate([np.zeros(25), np.full(50, 0.2), np.full(25, 0.1)])
    m = ev.rms_baseline_motion(_audio_from_envelope(envelope), 100)
    assert m.shape == (100, MOTION_DIM) and m.dtype == np.float32
    others = np.ones(MOTION_DIM, bool)
    others[idx("jawOpen")] = False
    assert np.array_equal(m[:, others], np.tile(REST, (100, 1))[:, others])
    jaw = m[:, idx("jawOpen")]
    assert jaw[:25] == pytest.approx(REST[idx("jawOpen")])
    assert jaw[30] == pytest.approx(REST[idx("jawOpen")] + ev.BASELINE_GAIN)  # loud = reference
    assert jaw[90] == pytest.approx(REST[idx("jawOpen")] + ev.BASELINE_GAIN / 2)
