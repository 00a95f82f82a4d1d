"""The motion rules of the synthetic engine: articulation, listening, head, blinks."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from dystream.config import FRAMES_PER_SECOND, SAMPLE_RATE
from dystream.data.behaviour import animate_party, sample_style
from dystream.data.schema import PartyLabels
from dystream.errors import InputError
from dystream.evaluation.toy import make_toy_conversation
from dystream.metrics import events as ev
from dystream.motion import LOWER, MOTION_DIM, POSE_LIMIT_DEGREES, UPPER, idx

FPS = FRAMES_PER_SECOND
VISEME_CHANNELS = [idx(n) for n in (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthRollLower", "mouthRollUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "mouthStretchLeft", "mouthStretchRight")]


def _style(seed: int = 0, **overrides) -> dict:
    style = sample_style(np.random.default_rng(seed))
    style.update(overrides)
    return style


def _animate(phones, seconds, *, style=None, partner=None, phrases=None, seed=0):
    """Motion of a party saying ``phones`` (one phrase spanning them unless given)."""
    if phrases is None and phones:
        phrases = [[phones[0][1], phones[-1][2]]]
    own = PartyLabels(phones=[list(p) for p in phones], phrases=phrases or [])
    num_frames = int(seconds * FPS)
    audio = np.zeros(num_frames * SAMPLE_RATE // FPS, dtype=np.float32)
    motion, own = animate_party(own, partner or PartyLabels(), audio, num_frames,
                                style or _style(seed), np.random.default_rng(seed))
    return motion, own


def _syllables(rng, consonants, vowels, count, start=0.5, vowel_s=(0.1, 0.22)):
    t, phones = start, []
    for _ in range(count):
        c = consonants[int(rng.integers(len(consonants)))]
        v = vowels[int(rng.integers(len(vowels)))]
        dc, dv = rng.uniform(0.05, 0.1), rng.uniform(*vowel_s)
        phones += [[c, t, t + dc], [v, t + dc, t + dc + dv]]
        t += dc + dv
    return phones, t


# --- style -------------------------------------------------------------------

def test_style_is_json_and_in_range():
    for seed in range(20):
        style = sample_style(np.random.default_rng(seed))
        assert json.loads(json.dumps(style)) == style
        assert len(style["neutral"]) == MOTION_DIM
        assert 0.05 <= style["anticipation_lead_s"] <= 0.15
        assert 0.2 <= style["listening_nod_delay_mean_s"] <= 0.5
        for name, limit in POSE_LIMIT_DEGREES.items():
            assert abs(math.degrees(style["neutral"][idx(name)])) < limit / 2
    assert sample_style(np.random.default_rng(3)) == sample_style(np.random.default_rng(3))
    assert sample_style(np.random.default_rng(3)) != sample_style(np.random.default_rng(4))


# --- articulation ------------------------------------------------------------

def test_bilabials_close_the_lips_and_other_consonants_do_not():
    rng = np.random.default_rng(1)
    open_vowels = ["aa", "ae", "ah", "ao", "ay", "eh"]
    phones, end = _syllables(rng, ["p", "b", "m"], open_vowels, 40)
    motion, _ = _animate(phones, end + 1.0)
    assert ev.bilabial_closure_rate(motion, phones) == 1.0
    # The same utterance with alveolars in place of the bilabials keeps the lips apart.
    alveolar = [["t" if p in ("p", "b", "m") else p, s, e] for p, s, e in phones]
    motion_t, _ = _animate(alveolar, end + 1.0)
    as_if_bilabial = [["p", s, e] for p, s, e in alveolar if p == "t"]
    assert ev.bilabial_closure_rate(motion_t, as_if_bilabial) < 0.2


def test_labiodentals_tuck_and_rounded_vowels_pucker():
    phones = [["aa", 0.5, 0.7], ["f", 0.7, 0.82], ["aa", 0.82, 1.02], ["v", 1.02, 1.12],
              ["aa", 1.12, 1.32], ["uw", 1.32, 1.6], ["t", 1.6, 1.68], ["iy", 1.68, 1.95]]
    motion, _ = _animate(phones, 3.0)

    def at(t, name):
        return motion[int(t * FPS), idx(name)]

    for mid in (0.76, 1.07):  # f, v
        assert at(mid, "mouthRollLower") > 0.2
        assert at(mid, "mouthRollLower") > 2 * at(0.6, "mouthRollLower")
        assert at(mid, "mouthUpperUpLeft") > at(0.6, "mouthUpperUpLeft")
    assert at(1.46, "mouthPucker") > 0.35  # uw
    assert at(1.82, "mouthPucker") < 0.15  # iy
    assert at(1.46, "mouthFunnel") > at(1.82, "mouthFunnel") + 0.1


def test_open_vowels_peak_jaw_at_the_nucleus_in_proportion_to_openness():
    consonants = ["p", "b", "m", "t", "d", "s", "n", "k", "f"]
    open_vowels = ["aa", "ae", "ah", "ao", "aw", "ay"]
    offsets = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        phones, end = _syllables(rng, consonants, open_vowels, 30)
        motion, _ = _animate(phones, end + 1.0, seed=seed)
        jaw = motion[:, idx("jawOpen")]
        for phone, start, stop in phones:
            if phone in open_vowels:
                nucleus = int(math.floor(0.5 * (start + stop) * FPS))
                a, b = int(math.floor(start * FPS)) - 1, int(math.ceil(stop * FPS)) + 1
                offsets.append(a + int(np.argmax(jaw[a:b])) - nucleus)
    offsets = np.abs(np.array(offsets))
    assert np.mean(offsets <= 1) >= 0.97, np.bincount(offsets)
    assert offsets.max() <= 2

    # Openness order: aa > ae/ah/ao > eh > ih/iy/uw, read at the nucleus.
    def peak(vowel):
        motion, _ = _animate([["t", 0.5, 0.58], [vowel, 0.58, 0.78], ["t", 0.78, 0.86]], 1.5)
        return motion[int(0.68 * FPS), idx("jawOpen")]

    aa, eh = peak("aa"), peak("eh")
    mid = [peak(v) for v in ("ae", "ah", "ao")]
    close = [peak(v) for v in ("ih", "iy", "uw")]
    assert aa > max(mid) and min(mid) > eh > max(close)


def test_lips_move_before_the_sound_by_the_persons_lead():
    measured = {}
    for lead in (0.06, 0.14):
        style = _style(2, anticipation_lead_s=lead)
        leads = []
        rng = np.random.default_rng(5)
        phrases, phones, t = [], [], 1.0
        for _ in range(12):
            part, end = _syllables(rng, ["b", "t", "s", "m", "k"], ["aa", "iy", "uw", "eh"], 4, start=t)
            phones += part
            phrases.append([t, end])
            t = end + 1.5  # long silence before every phrase
        motion, _ = _animate(phones, t, style=style, phrases=phrases)
        neutral = np.asarray(style["neutral"])
        deviation = np.abs(motion[:, VISEME_CHANNELS] - neutral[VISEME_CHANNELS]).max(axis=1)
        for start, _ in phrases:
            first = int(math.floor(start * FPS))
            window = np.arange(first - 15, first + 3)
            assert deviation[window[0]] < 0.01  # at rest before the phrase
            onset = window[np.argmax(deviation[window] > 0.02)]
            leads.append(start - (onset + 0.5) / FPS)
        leads = np.array(leads)
        # Lip motion starts before the sound, and no earlier than the lead (+1 frame).
        assert np.all(leads > 0.0), leads
        assert np.all(leads <= lead + 1.0 / FPS), leads
        measured[lead] = leads.mean()
    assert measured[0.14] > measured[0.06] + 0.04


# --- listening -----------------------------------------------------------------

def _listening_setup(seconds=120.0, gap=4.0):
    partner_phrases = [[t, t + gap - 1.2] for t in np.arange(1.0, seconds - 5.0, gap)]
    return PartyLabels(phrases=[[float(a), float(b)] for a, b in partner_phrases])


def test_listener_nods_follow_partner_phrase_ends_with_the_sampled_delay():
    partner = _listening_setup()
    ends = np.array([e for _, e in partner.phrases])
    for seed, mean_delay in ((0, 0.3), (1, 0.4)):
        style = _style(seed, nod_probability=1.0, listening_nod_delay_mean_s=mean_delay)
        motion, own = _animate([], 120.0, style=style, partner=partner, seed=seed)
        nods = np.array(own.nods)
        # Every partner phrase end gets exactly one nod, 200-500 ms later.
        assert len(nods) == len(ends)
        delays = nods[:, 0] - ends
        assert np.all((delays >= 0.2) & (delays <= 0.5))
        assert abs(delays.mean() - mean_delay) < 0.03
        assert np.all(nods[:, 1] > math.radians(1.5))
        # The measuring function finds them in the motion, at the labelled times.
        detected = ev.detect_nods(motion)
        timing = ev.nod_timing(detected[:, 0], ends, np.ones(len(motion), bool))
        assert timing["response_rate"] >= 0.9
        assert abs(np.median(timing["delays_s"]) - np.median(delays)) < 0.05


def test_listening_has_still_lips_and_a_smile():
    partner = _listening_setup(60.0)
    style = _style(4, smile_baseline=0.1)
    motion, own = _animate([], 60.0, style=style, partner=partner, seed=4)
    neutral = np.asarray(style["neutral"])
    lips = [i for i in VISEME_CHANNELS]
    assert np.abs(motion[:, lips] - neutral[lips]).max() < 1e-6
    smile = motion[:, idx("mouthSmileLeft")] - neutral[idx("mouthSmileLeft")]
    assert np.median(smile) == pytest.approx(0.1, abs=0.02)
    for start, end in own.smiles:
        assert smile[int((start + end) / 2 * FPS)] > 0.2


# --- both: head, blinks ----------------------------------------------------------

def test_long_conversation_stays_near_neutral_and_inside_pose_limits():
    limits = np.radians([POSE_LIMIT_DEGREES[k] for k in ("pitch", "yaw", "roll")])
    for seed in range(3):
        conv = make_toy_conversation(np.random.default_rng(seed), seconds=600.0)
        for party in range(2):
            motion = conv.motion[party]
            neutral = np.asarray(conv.style[party]["neutral"])
            assert ev.pose_drift_degrees(motion, neutral) < 2.0
            rotation = motion[:, idx("pitch"):idx("roll") + 1]
            assert np.all(np.abs(rotation) <= limits + 1e-6)
            # Every minute, not just the last, averages close to the neutral pose.
            minutes = rotation[: len(rotation) // 1500 * 1500].reshape(-1, 1500, 3).mean(axis=1)
            assert np.degrees(np.abs(minutes - neutral[idx("pitch"):idx("roll") + 1]).max()) < 3.0
            assert np.all(motion >= LOWER - 1e-6) and np.all(motion <= UPPER + 1e-6)


def test_blinks_are_recorded_and_shown():
    style = _style(6, blinks_per_minute=20.0)
    motion, own = _animate([], 180.0, style=style, partner=_listening_setup(180.0), seed=6)
    blinks = np.array(own.blinks)
    assert 35 <= len(blinks) <= 90  # Poisson around 60, thinned by a refractory gap
    assert np.all(np.diff(blinks) >= 0.6 - 1e-9)
    eye = motion[:, idx("eyeBlinkLeft")]
    assert np.all(eye[np.floor(blinks * FPS).astype(int)] > 0.5)
    assert np.median(eye) < 0.25


def test_deterministic_for_a_seed():
    a = make_toy_conversation(np.random.default_rng(11), seconds=30.0)
    b = make_toy_conversation(np.random.default_rng(11), seconds=30.0)
    assert np.array_equal(a.motion, b.motion)
    assert a.labels[0].nods == b.labels[0].nods and a.labels[1].blinks == b.labels[1].blinks


def test_fast_enough_for_the_engine():
    conv = make_toy_conversation(np.random.default_rng(0), seconds=300.0)
    own, partner = conv.labels
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        animate_party(own, partner, conv.audio[0], conv.num_frames, conv.style[0],
                      np.random.default_rng(0))
        best = min(best, time.perf_counter() - start)
    per_minute_ms = best / 5.0 * 1000
    assert per_minute_ms < 20.0, f"{per_minute_ms:.1f} ms per minute of motion"


def test_bad_input_gives_clear_errors():
    with pytest.raises(InputError, match="unknown phone"):
        _animate([["xx", 0.1, 0.2]], 1.0)
    with pytest.raises(InputError, match="sample_style"):
        animate_party(PartyLabels(), PartyLabels(), np.zeros(16000, np.float32), 25, {"neutral": []},
                      np.random.default_rng(0))
    with pytest.raises(InputError, match="mono"):
        animate_party(PartyLabels(), PartyLabels(), np.zeros((16000, 2), np.float32), 25, _style(),
                      np.random.default_rng(0))
    # Stress digits and other aligners' silence labels are accepted.
    motion, _ = _animate([["sil", 0.0, 0.2], ["AA1", 0.2, 0.4], ["sp", 0.4, 0.5]], 1.0)
    assert motion.shape == (25, MOTION_DIM)


@pytest.mark.parametrize("num_frames", [0, 1, 5, 30])
def test_short_sequences_and_labels_past_the_end(num_frames):
    own = PartyLabels(phones=[["aa", 0.0, 0.1], ["m", 5.0, 5.2]], words=[["mama", 0.0, 5.2]],
                      phrases=[[0.0, 0.1], [5.0, 5.2]])
    motion, own = animate_party(own, PartyLabels(phrases=[[0.0, 0.05]]), np.zeros(0, np.float32),
                                num_frames, _style(), np.random.default_rng(0))
    assert motion.shape == (num_frames, MOTION_DIM) and motion.dtype == np.float32
    assert np.all(np.isfinite(motion))
    assert all(0 <= t <= num_frames / FPS for t in own.blinks)
