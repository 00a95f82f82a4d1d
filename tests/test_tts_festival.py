"""The Festival back end: the validation split's recorded voice (ked)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from dystream.config import SAMPLE_RATE
from dystream.data.tts import words_of
from dystream.errors import InputError, MissingDependencyError

has_festival = shutil.which("festival") is not None or bool(os.environ.get("DYSTREAM_FESTIVAL"))
needs_festival = pytest.mark.skipif(not has_festival,
                                    reason="Festival is not installed (apt-get install festival festvox-kdlpc16k)")
_CMUDICT_PHONES = set("aa ae ah ao aw ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy p pau r s sh t "
                      "th uh uw v w y z zh".split())


@pytest.mark.tts
@needs_festival
def test_ked_speaks_each_sentence_with_engine_phone_and_word_times():
    from dystream.data.tts import synthesize

    sentences = ['She said "maybe" to the bump on the map.', "Really?", "uh huh"]
    utts = synthesize("festival:ked", sentences)
    assert [u.text for u in utts] == sentences
    for utt, sentence in zip(utts, sentences):
        assert [w for w, _, _ in utt.words] == words_of(sentence)
        phones = [p for p, _, _ in utt.phones]
        assert set(phones) <= _CMUDICT_PHONES and phones[0] != "pau" and phones[-1] != "pau"
        starts, ends = np.array([p[1] for p in utt.phones]), np.array([p[2] for p in utt.phones])
        assert np.all(ends > starts) and np.all(np.abs(starts[1:] - ends[:-1]) < 1e-6)
        assert 0 <= starts[0] and ends[-1] <= utt.duration + 1e-6
        # each word spans its own phones, in order
        word_starts = [s for _, s, _ in utt.words]
        assert word_starts == sorted(word_starts)
    # engine timing: the vowel of "bump" is loud, the closure of its final p nearly silent
    first = utts[0]
    energy = lambda s, e: float(np.sqrt(np.mean(first.audio[int(s * SAMPLE_RATE):int(e * SAMPLE_RATE)] ** 2)))
    bump = next((s, e) for w, s, e in first.words if w == "bump")
    inside = [(p, s, e) for p, s, e in first.phones if s >= bump[0] - 1e-6 and e <= bump[1] + 1e-6]
    assert [p for p, _, _ in inside] == ["b", "ah", "m", "p"]
    vowel, closure = inside[1], inside[3]
    assert energy(vowel[1], vowel[2]) > 5 * energy(closure[1], closure[1] + 0.5 * (closure[2] - closure[1]))
    # slower speech stretches the engine's own phone times
    slow = synthesize("festival:ked", sentences[:1], speed=1.3)[0]
    assert slow.phones[-1][2] > 1.15 * first.phones[-1][2]


@pytest.mark.tts
@needs_festival
def test_unknown_festival_voice_names_the_installed_ones():
    from dystream.data.tts import festival

    with pytest.raises(InputError, match="no voice 'nobody'.*ked"):
        festival.synthesize("nobody", ["Hello."])
    with pytest.raises(InputError, match="at least one word"):
        festival.synthesize("ked", ["..."])


def test_missing_festival_names_the_fix(monkeypatch):
    from dystream.data.tts import festival

    festival.festival_command.cache_clear()
    festival._installed.cache_clear()
    try:
        monkeypatch.setenv("DYSTREAM_FESTIVAL", "/nonexistent/festival")
        with pytest.raises(MissingDependencyError, match="apt-get install festival festvox-kdlpc16k"):
            festival.synthesize("ked", ["Hello."])
        monkeypatch.delenv("DYSTREAM_FESTIVAL")
        monkeypatch.setenv("PATH", "/nonexistent")
        with pytest.raises(MissingDependencyError, match="--engines flite,espeak"):
            festival.synthesize("ked", ["Hello."])
    finally:
        festival.festival_command.cache_clear()
        festival._installed.cache_clear()


def test_voice_table_gives_festival_the_val_split_and_kal16_to_training():
    from dystream.data.voices import check_split_voices, voices_by_split

    voices = voices_by_split(["flite", "espeak", "festival"])
    assert "flite:kal16" in voices["train"] and voices["test"][0] == "flite:slt"
    assert "festival:ked" in voices["val"]
    assert not set(voices["train"]) & (set(voices["val"]) | set(voices["test"]))
    without = voices_by_split(["flite", "espeak", "festival"], exclude=["flite:kal16"])
    assert "flite:kal16" not in without["train"] and len(without["train"]) == len(voices["train"]) - 1
    added = voices_by_split(["flite", "espeak", "festival"], add_train=["festival:lp"])
    assert added["train"][-1] == "festival:lp" and "festival:lp" not in voices["train"]
    with pytest.raises(InputError, match="already in a split"):
        voices_by_split(["flite", "festival"], add_train=["flite:slt"])
    with pytest.raises(InputError, match="add its engine"):
        voices_by_split(["flite", "espeak"], add_train=["festival:lp"])
    flite_only = voices_by_split(["flite"])
    assert flite_only["val"] == []
    check_split_voices(flite_only, {"train": 1.0, "val": 0.0, "test": 1.0})
    with pytest.raises(InputError, match="val split has no voice.*espeak or festival.*--split-hours val=0"):
        check_split_voices(flite_only, {"train": 1.0, "val": 1.0, "test": 1.0})


def test_foreign_phone_sets_map_to_the_phone_with_the_same_mouth():
    from dystream.data.behaviour import PHONES
    from dystream.data.tts.festival import to_cmudict

    # bilabials stay bilabials in every set; stress digits and length marks go
    assert [to_cmudict(p) for p in ("p", "b", "m", "m:", "p:")] == ["p", "b", "m", "m", "p"]
    assert [to_cmudict(p, vowel=True) for p in ("a1", "E1", "O", "u:", "y", "ax")] == ["aa", "eh", "ao", "uw", "uw", "ah"]
    assert [to_cmudict(p) for p in ("tS", "dZ", "J", "L", "rr", "T", "#", "pau", "em")] == \
        ["ch", "jh", "n", "l", "r", "th", "pau", "pau", "m"]
    # unknown phones: a neutral vowel, or a consonant that constrains neither lips nor jaw
    assert to_cmudict("Q9", vowel=True) == "ah" and to_cmudict("Q9") == "hh"
    assert all(to_cmudict(p) in PHONES for p in ("i", "e", "ts", "dz", "nf", "N", "D", "h", "@", "7", "&"))


@pytest.mark.tts
@pytest.mark.skipif(not has_festival, reason="Festival is not installed")
def test_italian_voice_speaks_questions_it_cannot_intone_as_statements():
    from dystream.data.tts import festival

    if "lp" not in festival.available_voices():
        pytest.skip("the Italian voice is not installed (apt-get install festvox-italp16k)")
    sentences = ["Did you watch the interview tonight?", "We should visit the park.", "Can you help me?"]
    utts = festival.synthesize("lp", sentences)
    assert [u.text for u in utts] == sentences
    for utt in utts:
        assert utt.duration > 0.5 and np.sqrt(np.mean(utt.audio ** 2)) > 0.01
        assert {p for p, _, _ in utt.phones} <= _CMUDICT_PHONES


@needs_festival
def test_unpacked_install_needs_a_data_folder_with_init_scm(monkeypatch, tmp_path):
    from dystream.data.tts import festival

    festival.festival_command.cache_clear()
    festival._installed.cache_clear()
    try:
        monkeypatch.setenv("DYSTREAM_FESTIVAL_DATA", str(tmp_path))
        with pytest.raises(MissingDependencyError, match="no init.scm"):
            festival.available_voices()
    finally:
        festival.festival_command.cache_clear()
        festival._installed.cache_clear()
