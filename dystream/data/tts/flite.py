"""The flite back end (CMU Flite, BSD-style license): the main, permissive engine.

flite is run as a program. All sentences of one request go to a single flite
process (process start-up would otherwise dominate), with ``-psdur`` so that
flite prints every phone with its end time. The phone stream is split back
into sentences and words by aligning it with each word's dictionary phones,
which flite itself gives for the vocabulary (one more call, cached).

Where flite is: ``$DYSTREAM_FLITE`` (path to the binary) or ``flite`` on PATH;
``$DYSTREAM_FLITE_LIB`` adds a library folder, for a .deb unpacked with
``dpkg -x`` instead of installed (``libflite1`` then lives in ``usr/lib/...``).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from dystream.audio.io import to_mono_16k
from dystream.data.tts import Utterance, assign_phones_to_words, cut_sentence, words_of
from dystream.errors import InputError, MissingDependencyError


_INSTALL_HINT = ("install it with `apt-get install flite`, or point DYSTREAM_FLITE at the flite binary "
                 "(and DYSTREAM_FLITE_LIB at its library folder for an unpacked .deb)")


@functools.lru_cache(maxsize=None)
def flite_command() -> tuple[str, dict[str, str]]:
    """The flite binary and the environment to run it in."""
    configured = os.environ.get("DYSTREAM_FLITE")
    if configured:
        binary = Path(configured)
        if not binary.is_file():
            raise MissingDependencyError(f"DYSTREAM_FLITE={configured} is not a file; {_INSTALL_HINT}")
        path = str(binary)
    else:
        found = shutil.which("flite")
        if found is None:
            raise MissingDependencyError(f"the flite speech engine is not installed; {_INSTALL_HINT}")
        path = found
    env = dict(os.environ)
    lib = os.environ.get("DYSTREAM_FLITE_LIB")
    if lib:
        env["LD_LIBRARY_PATH"] = lib + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    return path, env


def _run(args: list[str]) -> str:
    binary, env = flite_command()
    try:
        done = subprocess.run([binary, *args], capture_output=True, text=True, env=env, check=False)
    except OSError as exc:
        raise MissingDependencyError(f"cannot run flite ({exc}); {_INSTALL_HINT}") from None
    if done.returncode != 0:
        raise MissingDependencyError(f"flite failed ({done.stderr.strip() or done.returncode}); {_INSTALL_HINT}")
    return done.stdout


@functools.lru_cache(maxsize=None)
def available_voices() -> tuple[str, ...]:
    out = _run(["-lv"])
    return tuple(out.split(":", 1)[-1].split())


def _check_voice(name: str) -> None:
    voices = available_voices()
    if name not in voices:
        raise InputError(f"flite has no voice {name!r}; it has: {', '.join(voices)}")


# flite's phone set is CMUdict's 39 ARPAbet phones plus schwa "ax"; labels use
# CMUdict's set, where schwa is an unstressed "ah".
_TO_CMUDICT = {"ax": "ah"}


def _parse_phones(text: str) -> list[tuple[str, float, float]]:
    """``pau:0.16 hh:0.25 ...`` (end times) -> [(phone, start, end)], CMUdict phones."""
    phones = []
    start = 0.0
    for item in text.split():
        phone, sep, end = item.rpartition(":")
        if not sep:
            continue
        try:
            end_time = float(end)
        except ValueError:
            continue
        phones.append((_TO_CMUDICT.get(phone, phone), start, end_time))
        start = end_time
    return phones


_LEXICON: dict[str, list[str]] = {}


def word_phones(words: list[str]) -> list[list[str]]:
    """Dictionary phones of each word as flite says it alone (cached per process)."""
    missing = sorted({w for w in words if w not in _LEXICON})
    if missing:
        # "w1. w2. w3." -> a pause between every word; no audio written
        out = _run(["-voice", "kal", "-t", " ".join(f"{w}." for w in missing), "-o", "none", "-psdur"])
        groups: list[list[str]] = [[]]
        for phone, _, _ in _parse_phones(out):
            if phone == "pau":
                if groups[-1]:
                    groups.append([])
            else:
                groups[-1].append(phone)
        groups = [g for g in groups if g]
        if len(groups) != len(missing):
            # a word flite split in two: fall back to one call per word
            for w in missing:
                _LEXICON[w] = [p for p, _, _ in _parse_phones(
                    _run(["-voice", "kal", "-t", f"{w}.", "-o", "none", "-psdur"])) if p != "pau"]
        else:
            _LEXICON.update(zip(missing, groups))
    return [_LEXICON[w] for w in words]


def _read_wav(path: Path) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
    return to_mono_16k(audio, rate, source=str(path), note=False)


def synthesize(voice: str, sentences: list[str], *, duration_stretch: float = 1.0) -> list[Utterance]:
    """One :class:`Utterance` per sentence, all spoken in one flite run."""
    _check_voice(voice)
    if not sentences:
        return []
    per_sentence_words = [words_of(s) for s in sentences]
    if any(not w for w in per_sentence_words):
        raise InputError("every sentence needs at least one word")
    # every sentence ends in punctuation, so flite pauses between them
    text = " ".join(s if s.rstrip()[-1:] in ".?!" else s.rstrip() + "." for s in sentences)
    with tempfile.TemporaryDirectory(prefix="dystream-flite-") as tmp:
        wav = Path(tmp) / "out.wav"
        out = _run(["-voice", voice, "--setf", f"duration_stretch={duration_stretch:.4f}",
                    "-t", text, "-o", str(wav), "-psdur"])
        audio = _read_wav(wav)
    phones = _parse_phones(out)
    spoken = [(i, p) for i, p in enumerate(phones) if p[0] != "pau"]
    all_words = [w for ws in per_sentence_words for w in ws]
    spans = assign_phones_to_words([p[0] for _, p in spoken], word_phones(all_words))

    utterances = []
    word_cursor = 0
    for sentence_text, words in zip(sentences, per_sentence_words):
        word_spans = spans[word_cursor:word_cursor + len(words)]
        word_cursor += len(words)
        first = next((a for a, b in word_spans if b > a), None)
        last = next((b for a, b in reversed(word_spans) if b > a), None)
        if first is None or last is None:
            raise InputError(f"flite produced no speech for {sentence_text!r}")
        lo_phone, hi_phone = spoken[first][0], spoken[last - 1][0]
        clip, offset, end_limit = cut_sentence(audio, phones[lo_phone][1], phones[hi_phone][2])
        sentence_phones = [(p, max(s - offset, 0.0), min(e - offset, end_limit))
                           for p, s, e in phones[lo_phone:hi_phone + 1]]
        sentence_words = []
        for word, (wa, wb) in zip(words, word_spans):
            if wb > wa:
                start, end = phones[spoken[wa][0]][1] - offset, phones[spoken[wb - 1][0]][2] - offset
            else:  # swallowed by its neighbours: a zero-length word at the boundary
                edge = phones[spoken[min(wa, len(spoken) - 1)][0]][1] - offset
                start = end = edge
            sentence_words.append((word, max(start, 0.0), min(end, end_limit)))
        utterances.append(Utterance(sentence_text, clip, sentence_phones, sentence_words))
    return utterances
