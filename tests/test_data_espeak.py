"""The optional espeak-ng back end, and its isolation from the core (espeak-ng is GPL)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from dystream.errors import InputError, MissingDependencyError

has_espeak = importlib.util.find_spec("espeakng_loader") is not None
needs_espeak = pytest.mark.skipif(not has_espeak, reason="espeak-ng is not installed (pip install espeakng-loader)")
CMUDICT = set("aa ae ah ao aw ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy p pau r s sh t "
              "th uh uw v w y z zh".split())


def test_core_never_imports_the_gpl_engine():
    code = (
        "import sys, numpy as np\n"
        "import dystream.cli, dystream.data.cli, dystream.data.synth, dystream.data.script, dystream.data.inspect\n"
        "from dystream.data.tts import words_of\n"
        "from dystream.data import voices\n"
        "voices.voices_by_split(['flite'])\n"
        "bad = [m for m in sys.modules if 'espeak' in m]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_espeak_mnemonics_map_to_cmudict():
    from dystream.data.tts.espeak import to_arpabet

    assert to_arpabet("'A@") == "aa" and to_arpabet(",oU") == "ow" and to_arpabet("tS") == "ch"
    assert to_arpabet("_:") == "pau" and to_arpabet("@2") == "ah" and to_arpabet("N") == "ng"
    for mnemonic in ["'aI@", "I#", "l/2", "3:", "z/2", "x", "?", "'E"]:
        assert to_arpabet(mnemonic) in CMUDICT


def test_missing_espeak_names_the_fix(monkeypatch):
    from dystream.data.tts import espeak

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingDependencyError, match="pip install espeakng-loader"):
        espeak.check_available()


@pytest.mark.tts
@needs_espeak
def test_espeak_gives_engine_timed_phones_and_words():
    from dystream.data.tts import synthesize, words_of

    sentences = ["I think the weather was a bit strange yesterday.", "uh huh"]
    for voice in ("espeak:en-us+m1", "espeak:en-029+m7"):
        utts = synthesize(voice, sentences, speed=1.1)
        assert len(utts) == 2
        for utt, sentence in zip(utts, sentences):
            starts = np.array([s for _, s, _ in utt.phones])
            ends = np.array([e for _, _, e in utt.phones])
            assert np.all(np.diff(starts) >= 0) and np.all(ends > starts)
            assert ends[-1] <= utt.duration + 1e-6
            assert {p for p, _, _ in utt.phones} <= CMUDICT
            named = [w for w, _, _ in utt.words]
            assert set(" ".join(named).split()) <= set(words_of(sentence)) and len(named) >= 2
        durations = ends - starts
        assert durations.std() > 0.01  # engine timing, not an even spread


@pytest.mark.tts
@needs_espeak
def test_unknown_espeak_voice_is_an_input_error():
    from dystream.data.tts import synthesize

    with pytest.raises(InputError, match="no voice"):
        synthesize("espeak:xx-nowhere+m1", ["Hello."])


@pytest.mark.tts
@needs_espeak
def test_every_espeak_voice_of_the_splits_speaks():
    from dystream.data.tts import espeak
    from dystream.data.voices import ESPEAK_SPLITS

    for voices in ESPEAK_SPLITS.values():
        for voice in voices:
            utterances = espeak.synthesize(voice.split(":", 1)[1], ["Good morning to you."])
            assert len(utterances) == 1 and utterances[0].audio.size > 0, voice


@pytest.mark.tts
@needs_espeak
def test_espeak_speaks_a_sentence_alike_whatever_it_spoke_before():
    # the engine carries state from sentence to sentence (a clock-seeded noise generator,
    # the pitch flutter's phase): each request must start from the engine as started
    import hashlib
    import json

    from dystream.data.tts import synthesize

    sentence = "She sells sea shells by the sea shore, I think."
    # plain, breathy (noise), klatt (noise) voices
    voices = ["espeak:en-us+m1", "espeak:en-gb-x-rp+f3", "espeak:en-us+edward"]

    def digest(utterance):
        labels = json.dumps([utterance.phones, utterance.words]).encode()
        return hashlib.sha256(utterance.audio.tobytes() + labels).hexdigest()

    here = []
    for voice in voices:
        first = digest(synthesize(voice, [sentence])[0])
        synthesize(voice, ["Something else entirely, and then some more.", "yeah"], speed=1.1)
        synthesize("espeak:en-029+m7", ["Another voice in between."])
        assert digest(synthesize(voice, [sentence])[0]) == first, voice
        here.append(first)
    code = (
        "import hashlib, json, sys\n"
        "from dystream.data.tts import synthesize\n"
        f"for voice in {voices!r}:\n"
        f"    u = synthesize(voice, [{sentence!r}])[0]\n"
        "    labels = json.dumps([u.phones, u.words]).encode()\n"
        "    print(hashlib.sha256(u.audio.tobytes() + labels).hexdigest())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == here  # and alike in a fresh process
