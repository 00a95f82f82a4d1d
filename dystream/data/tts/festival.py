"""The Festival back end (Festival Speech Synthesis System; free, BSD-style terms).

Festival is run as a program in batch mode on a small Scheme script we write:
one process per request, one utterance per sentence. For each sentence the
script saves the waveform and prints every segment (phone) with its end time
and the word it belongs to, read from Festival's own utterance structure, so
phone and word times are the engine's, not estimated.

Voices are Festival voice names without the ``_diphone``/``_hts`` suffix, e.g.
``ked`` (Debian ``festvox-kdlpc16k``, a US male diphone voice). Voices of other
languages read our English sentences with their own letter-to-sound rules, so
they speak accented English; their phones (Italian, Catalan, Finnish phone
sets) are mapped to the CMUdict phone with the same mouth shape, and the lip
and jaw motion follows what the engine actually said.

Where Festival is: ``$DYSTREAM_FESTIVAL`` (path to the binary) or ``festival``
on PATH; for .debs unpacked with ``dpkg -x`` instead of installed,
``$DYSTREAM_FESTIVAL_LIB`` adds shared-library folders (``:``-separated) and
``$DYSTREAM_FESTIVAL_DATA`` names Festival's data folder (``usr/share/festival``).
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
from dystream.config import SAMPLE_RATE
from dystream.data.tts import Utterance, cut_sentence, words_of
from dystream.errors import InputError, MissingDependencyError

_INSTALL_HINT = ("install it with `apt-get install festival festvox-kdlpc16k`, or point DYSTREAM_FESTIVAL "
                 "at the festival binary; or leave its voices out with `--engines flite,espeak`")

# Festival's phone sets -> CMUdict ARPAbet (lower case); a phone becomes the one whose
# mouth shape it shares. English "radio" set: syllabic and flapped variants.
_TO_CMUDICT = {"ax": "ah", "axr": "er", "dx": "d", "el": "l", "em": "m", "en": "n", "nx": "n",
               "hv": "hh", "h#": "pau", "brth": "pau", "#": "pau", "##": "pau", "_": "pau"}
# Other languages' sets (Italian lp, Catalan ona, Finnish lj), after stress digits and
# length marks are removed: IPA-like names, matched case-sensitively.
_FOREIGN = {
    "i": "iy", "e": "ey", "E": "eh", "a": "aa", "o": "ow", "O": "ao", "u": "uw",
    "y": "uw", "@": "ae", "7": "uh", "&": "ae",            # Finnish y, ä, ö
    "j": "y", "S": "sh", "Z": "zh", "ts": "s", "dz": "z", "tS": "ch", "dZ": "jh",
    "J": "n", "L": "l", "nf": "f", "N": "ng", "rr": "r", "T": "th", "D": "dh", "h": "hh",
}
# Segments Festival hangs under no word (pauses, post-lexical insertions) carry this id.
_NO_WORD = "0"


@functools.lru_cache(maxsize=None)
def festival_command() -> tuple[str, dict[str, str], str]:
    """The festival binary, the environment to run it in, and Scheme to run before ours
    (for an unpacked install: point Festival at its data folder and initialise from it,
    since the binary looks for its start-up file at the path it was built with)."""
    configured = os.environ.get("DYSTREAM_FESTIVAL")
    if configured:
        if not Path(configured).is_file():
            raise MissingDependencyError(f"DYSTREAM_FESTIVAL={configured} is not a file; {_INSTALL_HINT}")
        binary = configured
    else:
        found = shutil.which("festival")
        if found is None:
            raise MissingDependencyError(f"the Festival speech engine is not installed; {_INSTALL_HINT}")
        binary = found
    prelude = ""
    data = os.environ.get("DYSTREAM_FESTIVAL_DATA")
    if data:
        if not (Path(data) / "init.scm").is_file():
            raise MissingDependencyError(f"DYSTREAM_FESTIVAL_DATA={data} holds no init.scm; point it at the "
                                         "unpacked usr/share/festival folder")
        folder = _scheme_string(str(Path(data).resolve()) + "/")
        prelude = (f"(set! datadir {folder})\n(set! libdir {folder})\n"
                   "(load (path-append datadir \"init.scm\"))\n")
    env = dict(os.environ)
    lib = os.environ.get("DYSTREAM_FESTIVAL_LIB")
    if lib:
        env["LD_LIBRARY_PATH"] = lib + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    return binary, env, prelude


def to_cmudict(phone: str, vowel: bool = False) -> str:
    """One Festival phone -> a CMUdict phone; an unknown one becomes a neutral vowel
    ("ah") or a consonant that constrains neither lips nor jaw ("hh")."""
    if phone in _TO_CMUDICT:
        return _TO_CMUDICT[phone]
    from dystream.data.behaviour import PHONES

    bare = phone.rstrip("0123456789:")
    if bare in _FOREIGN:
        return _FOREIGN[bare]
    if bare in PHONES:
        return bare
    return "ah" if vowel else "hh"


def _run_script(script: str) -> str:
    binary, env, prelude = festival_command()
    with tempfile.NamedTemporaryFile("w", suffix=".scm", prefix="dystream-festival-", delete=False) as f:
        f.write(prelude + script)
        path = f.name
    try:
        done = subprocess.run([binary, "-b", path], capture_output=True, text=True, env=env, check=False)
    except OSError as exc:
        raise MissingDependencyError(f"cannot run festival ({exc}); {_INSTALL_HINT}") from None
    finally:
        os.unlink(path)
    # festival -b exits 0 even when the script fails; its errors start with "SIOD ERROR"
    if done.returncode != 0 or "SIOD ERROR" in done.stdout + done.stderr:
        message = (done.stderr.strip() or done.stdout.strip())[-400:]
        raise MissingDependencyError(f"festival failed ({message}); {_INSTALL_HINT}")
    return done.stdout


_SUFFIXES = ("_diphone", "_cg", "_hts", "_clunits")


@functools.lru_cache(maxsize=None)
def _installed() -> dict[str, str]:
    """Installed voices: short name (``ked``) -> Festival's name (``ked_diphone``)."""
    out = _run_script('(format t "VOICES %l\\n" (voice.list))\n')
    line = next((ln for ln in out.splitlines() if ln.startswith("VOICES ")), "VOICES ()")
    names = line[len("VOICES "):].strip("() \n").split()
    return {next((n[:-len(s)] for s in _SUFFIXES if n.endswith(s)), n): n for n in names}


def available_voices() -> tuple[str, ...]:
    return tuple(_installed())


def _voice_function(name: str) -> str:
    installed = _installed()
    if name not in installed:
        raise InputError(f"Festival has no voice {name!r} (it has {', '.join(installed) or 'none'}); "
                         "the ked voice is the Debian package festvox-kdlpc16k")
    return f"voice_{installed[name]}"


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _script(voice_function: str, sentences: list[str], stretch: float, folder: Path) -> str:
    lines = [f"({voice_function})", f"(Parameter.set 'Duration_Stretch {stretch:.4f})",
             "(define (dystream_dump utt index)",
             "  (mapcar (lambda (seg) (format t \"SEG %d %s %s %f %s %s\\n\" index (item.name seg)",
             "            (item.feat seg \"ph_vc\") (item.feat seg \"end\")",
             "            (item.feat seg \"R:SylStructure.parent.parent.id\")",
             "            (item.feat seg \"R:SylStructure.parent.parent.name\")))",
             "          (utt.relation.items utt 'Segment)))"]
    for i, sentence in enumerate(sentences):
        wav = _scheme_string(str(folder / f"{i}.wav"))
        lines += [f"(set! u (utt.synth (Utterance Text {_scheme_string(sentence)})))",
                  f"(utt.save.wave u {wav} 'riff)", f"(dystream_dump u {i})"]
    return "\n".join(lines) + "\n"


def _parse(out: str, count: int) -> list[list[tuple[str, float, str, str]]]:
    """``SEG index phone vowel? end word_id word`` lines -> per sentence [(phone, end, word_id, word)]."""
    segments: list[list[tuple[str, float, str, str]]] = [[] for _ in range(count)]
    for line in out.splitlines():
        parts = line.split(" ", 6)
        if len(parts) < 6 or parts[0] != "SEG":
            continue
        index, phone, vowel, end, word_id = int(parts[1]), parts[2], parts[3] == "+", float(parts[4]), parts[5]
        word = parts[6] if len(parts) > 6 else ""
        segments[index].append((to_cmudict(phone, vowel), end, word_id, word))
    return segments


def _utterance(sentence: str, audio: np.ndarray, segments: list[tuple[str, float, str, str]]) -> Utterance:
    total = len(audio) / SAMPLE_RATE
    phones, owners, start = [], [], 0.0
    for phone, end, word_id, word in segments:
        end = min(end, total)
        if end > start:
            phones.append((phone, start, end))
            owners.append((word_id, word))
        start = max(start, end)
    spoken = [k for k, p in enumerate(phones) if p[0] != "pau"]
    if not spoken:
        raise InputError(f"Festival produced no speech for {sentence!r}")
    first, last = spoken[0], spoken[-1]
    clip, offset, limit = cut_sentence(audio, phones[first][1], phones[last][2])
    kept = [(p, max(s - offset, 0.0), min(e - offset, limit)) for p, s, e in phones[first:last + 1]]
    # words: runs of spoken phones with one Festival word id; a phone under no word
    # (a post-lexical insertion such as a linking "r") joins the word before it
    words: list[tuple[str, float, float]] = []
    current_id = None
    for k in spoken:
        word_id, word = owners[k]
        s, e = phones[k][1] - offset, phones[k][2] - offset
        if word_id == _NO_WORD and words:
            word_id = current_id
        if word_id != current_id or not words:
            name = " ".join(words_of(word)) or word.lower()
            words.append((name, max(s, 0.0), min(e, limit)))
            current_id = word_id
        else:
            words[-1] = (words[-1][0], words[-1][1], min(e, limit))
    return Utterance(sentence, clip, kept, words)


def synthesize(voice: str, sentences: list[str], *, duration_stretch: float = 1.0) -> list[Utterance]:
    """One :class:`Utterance` per sentence, all from one Festival run."""
    if not sentences:
        return []
    if any(not words_of(s) for s in sentences):
        raise InputError("every sentence needs at least one word")
    function = _voice_function(voice)
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="dystream-festival-") as tmp:
        folder = Path(tmp)
        segments = _speak(function, sentences, duration_stretch, folder)
        utterances = []
        for i, sentence in enumerate(sentences):
            wav = folder / f"{i}.wav"
            if not wav.is_file() or not segments[i]:
                raise MissingDependencyError(f"festival wrote no audio for {sentence!r}; {_INSTALL_HINT}")
            audio, rate = sf.read(str(wav), dtype="float32", always_2d=False)
            audio = to_mono_16k(audio, rate, source=f"festival:{voice}", note=False)
            utterances.append(_utterance(sentence, audio, segments[i]))
    return utterances


def _speak(function: str, sentences: list[str], stretch: float, folder: Path
           ) -> list[list[tuple[str, float, str, str]]]:
    """Segments of every sentence, audio in ``folder``/i.wav. Some voices fail on some
    sentences (the Italian voice's question intonation, for one): then each sentence is
    spoken on its own, and one that still fails is spoken as a statement."""
    try:
        return _parse(_run_script(_script(function, sentences, stretch, folder)), len(sentences))
    except MissingDependencyError:
        if len(sentences) == 1 and "?" not in sentences[0]:
            raise
    segments = []
    for i, sentence in enumerate(sentences):
        one = folder / f"_{i}"
        one.mkdir(exist_ok=True)
        try:
            segments += _parse(_run_script(_script(function, [sentence], stretch, one)), 1)
        except MissingDependencyError:
            if "?" not in sentence:
                raise
            segments += _parse(_run_script(_script(function, [sentence.replace("?", ".")], stretch, one)), 1)
        (one / "0.wav").replace(folder / f"{i}.wav")
    return segments
