"""Parts of the data engine: text, word alignment, augmentation, the flite back end."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from dystream.config import SAMPLE_RATE
from dystream.data import augment, text
from dystream.data.tts import assign_phones_to_words, words_of
from dystream.errors import InputError, MissingDependencyError

has_flite = shutil.which("flite") is not None or bool(os.environ.get("DYSTREAM_FLITE"))


def test_text_is_varied_and_disjoint_between_splits():
    drawn = {}
    for split in ("train", "val", "test"):
        rng = np.random.default_rng(0)
        drawn[split] = {text.sentence(rng, split) for _ in range(300)}
        assert all(text.split_of_text(s) == split for s in drawn[split])
    assert not drawn["train"] & drawn["test"] and not drawn["train"] & drawn["val"]
    assert len(drawn["train"]) > 200  # few repeats
    lengths = [len(s.split()) for s in drawn["train"]]
    assert min(lengths) <= 2 and max(lengths) >= 10


def test_turns_have_short_and_long_forms():
    rng = np.random.default_rng(1)
    sizes = [len(text.turn(rng, "train")) for _ in range(200)]
    assert min(sizes) == 1 and max(sizes) >= 5


def test_words_are_assigned_their_own_phones_despite_engine_changes():
    expected = [["dh", "ah"], ["k", "ae", "t"], ["s", "ae", "t"]]
    # the engine said "dh iy" (post-lexical change) and dropped nothing
    spans = assign_phones_to_words(["dh", "iy", "k", "ae", "t", "s", "ae", "t"], expected)
    assert spans == [(0, 2), (2, 5), (5, 8)]
    # an inserted phone joins the word before it; a vanished word gets an empty span
    spans = assign_phones_to_words(["k", "ae", "t", "ah", "s", "ae", "t"], [["k", "ae", "t"], ["s", "ae", "t"]])
    assert spans == [(0, 4), (4, 7)]
    spans = assign_phones_to_words(["k", "ae", "t", "s", "ae", "t"], [["k", "ae", "t"], ["ah"], ["s", "ae", "t"]])
    assert spans == [(0, 3), (3, 3), (3, 6)]


def test_words_of_matches_engine_tokenisation():
    assert words_of("Oh, really? I see.") == ["oh", "really", "i", "see"]


def test_speed_change_scales_length_and_augmentation_is_seeded():
    audio = np.sin(2 * np.pi * 220 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32)
    faster = augment.change_speed(audio, 1.04)
    assert abs(len(faster) - SAMPLE_RATE / 1.04) < 5
    settings = augment.PartyAugmentation(gain_db=-6.0, snr_db=30.0, reverb_seconds=0.3, reverb_mix=0.2,
                                         low_hz=200.0, high_hz=3400.0)
    a = augment.apply(audio, settings, np.random.default_rng(5))
    b = augment.apply(audio, settings, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.shape == audio.shape and a.dtype == np.float32
    # band limiting removes energy outside the band: a 5 kHz tone nearly vanishes
    tone = np.sin(2 * np.pi * 5000 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32)
    dry = augment.PartyAugmentation(0.0, 120.0, 0.0, 0.0, 200.0, 3400.0)
    filtered = augment.apply(tone, dry, np.random.default_rng(0))
    middle = slice(SAMPLE_RATE // 4, 3 * SAMPLE_RATE // 4)
    assert np.sqrt(np.mean(filtered[middle] ** 2)) < 0.01 * np.sqrt(np.mean(tone[middle] ** 2))
    voice_band = np.sin(2 * np.pi * 1000 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32)
    kept = augment.apply(voice_band, dry, np.random.default_rng(0))
    np.testing.assert_allclose(kept[middle], voice_band[middle], atol=0.01)
    # noise sits snr_db below the speech level, after the gain
    silence = np.zeros(SAMPLE_RATE, np.float32)
    noisy = augment.apply(silence, augment.PartyAugmentation(-6.0, 30.0, 0.0, 0.0, 0.0, 0.0),
                          np.random.default_rng(0), speech_rms=0.05)
    expected = 0.05 * 10 ** (-6 / 20) * 10 ** (-30 / 20)
    assert abs(np.sqrt(np.mean(noisy ** 2)) / expected - 1) < 0.05


@pytest.mark.tts
@pytest.mark.skipif(not has_flite, reason="flite is not installed (apt-get install flite)")
def test_flite_gives_per_sentence_audio_with_engine_timing():
    from dystream.data.tts import synthesize

    sentences = ["We should go to the market.", "Really?", "yeah"]
    utts = synthesize("flite:slt", sentences)
    assert [u.text for u in utts] == sentences
    for utt, sentence in zip(utts, sentences):
        assert [w for w, _, _ in utt.words] == words_of(sentence)
        assert 0 <= utt.phones[0][1] and utt.phones[-1][2] <= utt.duration + 1e-6
        assert np.sqrt(np.mean(utt.audio ** 2)) > 0.01
    # slower speech stretches the engine's own phone times
    slow = synthesize("flite:slt", sentences[:1], speed=1.3)[0]
    assert slow.phones[-1][2] > 1.15 * utts[0].phones[-1][2]


def _median_f0(audio: np.ndarray, rate: int = 16000) -> float:
    """Median pitch over loud 64 ms windows (autocorrelation peak between 60 and 500 Hz)."""
    out = []
    for start in range(0, len(audio) - 1024, 512):
        seg = audio[start:start + 1024]
        if np.sqrt(np.mean(seg ** 2)) < 0.03:
            continue
        seg = seg - seg.mean()
        ac = np.correlate(seg, seg, "full")[1023:]
        out.append(rate / (rate // 500 + np.argmax(ac[rate // 500:rate // 60])))
    return float(np.median(out))


@pytest.mark.tts
@pytest.mark.skipif(not has_flite, reason="flite is not installed (apt-get install flite)")
def test_timbre_makes_a_new_speaker_with_the_same_timing():
    from dystream.data.tts import synthesize

    sentence = ["We should go to the market before it closes, maybe around five."]
    base = synthesize("flite:awb", sentence)[0]
    for timbre in (0.88, 1.25):
        other = synthesize("flite:awb", sentence, timbre=timbre)[0]
        # pitch (and formants) scaled by the factor ...
        assert abs(_median_f0(other.audio) / _median_f0(base.audio) / timbre - 1) < 0.06
        # ... while the speaking rate and the phone timing stay
        assert abs(other.duration / base.duration - 1) < 0.02
        assert [p for p, _, _ in other.phones] == [p for p, _, _ in base.phones]
        assert abs(other.phones[-1][2] / base.phones[-1][2] - 1) < 0.02
        assert other.phones[-1][2] <= other.duration + 1e-6
    with pytest.raises(InputError, match="timbre"):
        synthesize("flite:awb", sentence, timbre=0)


@pytest.mark.tts
@pytest.mark.skipif(not has_flite, reason="flite is not installed (apt-get install flite)")
def test_unknown_voice_names_the_known_ones():
    from dystream.data.tts import synthesize

    with pytest.raises(InputError, match="slt"):
        synthesize("flite:nobody", ["Hello."])
    with pytest.raises(InputError, match="known voices"):
        synthesize("piper:joe", ["Hello."])


def test_missing_flite_names_the_fix(monkeypatch):
    from dystream.data.tts import flite

    flite.flite_command.cache_clear()
    flite.available_voices.cache_clear()
    try:
        monkeypatch.setenv("DYSTREAM_FLITE", "/nonexistent/flite")
        with pytest.raises(MissingDependencyError, match="apt-get install flite"):
            flite.synthesize("slt", ["Hello."])
        monkeypatch.delenv("DYSTREAM_FLITE")
        monkeypatch.setenv("PATH", "/nonexistent")
        with pytest.raises(MissingDependencyError, match="DYSTREAM_FLITE"):
            flite.synthesize("slt", ["Hello."])
    finally:
        flite.flite_command.cache_clear()
        flite.available_voices.cache_clear()


def test_data_command_has_its_three_subcommands(capsys):
    from dystream.cli import main

    for sub in ("synth", "inspect", "from-video"):
        with pytest.raises(SystemExit) as exit_info:
            main(["data", sub, "--help"])
        assert exit_info.value.code == 0
        assert f"dystream data {sub}" in capsys.readouterr().out
    assert main(["data", "inspect", "/nonexistent/dataset"]) == 2
    assert "not found" in capsys.readouterr().err


def test_plan_is_seeded_and_keeps_long_test_conversations():
    from dystream.data.synth import SynthSettings, plan, shard_plan

    settings = SynthSettings(seed=4, hours=2.0)
    first, again = plan(settings), plan(settings)
    assert first == again
    test = first["test"]
    assert sum(c.target_seconds >= 300 for c in test) >= 10
    for split in ("train", "val"):
        assert all(20.0 - 1e-9 <= c.target_seconds <= 240.0 for c in first[split])
    train_hours = sum(c.target_seconds for c in first["train"]) / 3600
    assert abs(train_hours - 2.0 * 0.85) < 0.07
    # the long test conversations are made whatever --hours says
    tiny = plan(SynthSettings(seed=4, hours=0.01))
    assert sum(c.target_seconds >= 300 for c in tiny["test"]) == 10
    shards = shard_plan(settings)
    assert sum(len(c) for _, _, c in shards) == sum(len(v) for v in first.values())
    assert all(len(c) <= settings.conversations_per_shard for _, _, c in shards)
    assert plan(SynthSettings(seed=5, hours=2.0)) != first
