"""The espeak-ng back end (optional; espeak-ng is GPL-3).

Kept apart from the core: nothing else imports this module, and the engine
itself runs in a child process (``python -m dystream.data.tts.espeak``) that
loads libespeak-ng from the ``espeakng-loader`` wheel through ctypes. The child
speaks each sentence with phoneme and word events switched on; the events give
each phoneme's start (engine timing, not an even spread) and each word's start.
The parent converts espeak's phoneme mnemonics to CMUdict ARPAbet, resamples to
16 kHz and cuts each sentence around its speech.

Determinism: the same request gives the same audio in every process, whatever
the process spoke before. libespeak-ng keeps state from one sentence to the next
that no call resets (its random generator, seeded with ``time(NULL)`` at start-up
and drawn by breathy and klatt voices; the pitch flutter's phase, a static inside
wavegen; resonator memories), so a sentence came out differently after other
sentences, and differently in each run. The child therefore serves each request
in a fork of itself as it was just after start-up (the fork's changes to the
engine die with it), seeding the generator before each sentence from a CRC of
voice, rate and text: a request's audio is a function of the request alone, as
flite's is. (A fork per sentence would make each sentence independent of the
others in its request too, but costs about 15 ms a sentence, several times the
synthesis itself.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

from dystream.audio.io import to_mono_16k
from dystream.config import SAMPLE_RATE
from dystream.data.tts import Utterance, cut_sentence, words_of
from dystream.errors import InputError, MissingDependencyError

_INSTALL_HINT = "install it with `pip install espeakng-loader`, or leave espeak out with `--engines flite`"
_DEFAULT_WORDS_PER_MINUTE = 175

# espeak-ng's English phoneme mnemonics -> CMUdict ARPAbet (lower case)
_TO_ARPABET = {
    "p": "p", "b": "b", "t": "t", "d": "d", "k": "k", "g": "g", "m": "m", "n": "n", "N": "ng",
    "f": "f", "v": "v", "T": "th", "D": "dh", "s": "s", "z": "z", "S": "sh", "Z": "zh", "h": "hh",
    "tS": "ch", "dZ": "jh", "l": "l", "r": "r", "w": "w", "j": "y", "x": "k", "C": "hh",
    "t#": "t", "d#": "d", "r-": "r", "l/": "l", "n-": "n", "m-": "m", "*": "d", "?": "t",
    "@": "ah", "@2": "ah", "@5": "ah", "@L": "l", "3": "er", "3:": "er", "a": "ae", "a#": "ah",
    "aa": "aa", "A:": "aa", "A@": "aa", "A#": "aa", "aI": "ay", "aI@": "ay", "aI3": "ay",
    "aU": "aw", "aU@": "aw", "e": "eh", "E": "eh", "e@": "eh", "eI": "ey", "i": "iy", "i:": "iy",
    "I": "ih", "I#": "ih", "I2": "ih", "i@": "iy", "i@3": "iy", "0": "aa", "O": "ao", "O:": "ao",
    "O@": "ao", "o@": "ao", "oU": "ow", "o": "ow", "OI": "oy", "u:": "uw", "u": "uw", "U": "uh",
    "U@": "uh", "V": "ah", "IR": "ih",
}
_VOWEL_START = {"@": "ah", "3": "er", "a": "ae", "A": "aa", "e": "eh", "E": "eh", "i": "iy", "I": "ih",
                "0": "aa", "O": "ao", "o": "ow", "u": "uw", "U": "uh", "V": "ah"}


def to_arpabet(mnemonic: str) -> str:
    """One espeak phoneme mnemonic -> a CMUdict phone ("pau" for pauses)."""
    mnemonic = mnemonic.lstrip("',%=")  # stress marks
    if not mnemonic or mnemonic.startswith("_") or mnemonic in ("||", "|"):
        return "pau"
    for candidate in (mnemonic, mnemonic.rstrip(";#/0123456789"), mnemonic[:2], mnemonic[:1]):
        if candidate in _TO_ARPABET:
            return _TO_ARPABET[candidate]
    return _VOWEL_START.get(mnemonic[:1], "pau")


def sentence_seed(voice: str, words_per_minute: int, sentence: str) -> int:
    """The engine's random seed for one sentence: a CRC of the request (never Python's
    salted ``hash``), so the same request gets the same noise in every process."""
    return zlib.crc32(f"{voice}\n{words_per_minute}\n{sentence}".encode())


def check_available() -> None:
    """The wheel is there (looked up, not imported: only the child process loads it)."""
    import importlib.util

    if importlib.util.find_spec("espeakng_loader") is None:
        raise MissingDependencyError(f"the espeak-ng voices need the espeakng-loader package; {_INSTALL_HINT}")


class _Child:
    """One espeak-ng process per Python process, reused for every request (start-up is most of a call)."""

    process: subprocess.Popen | None = None
    owner_pid: int = -1

    @classmethod
    def request(cls, payload: dict) -> str:
        if cls.process is None or cls.owner_pid != os.getpid() or cls.process.poll() is not None:
            cls.process = subprocess.Popen([sys.executable, "-m", "dystream.data.tts.espeak"],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True)
            cls.owner_pid = os.getpid()
        assert cls.process.stdin is not None and cls.process.stdout is not None
        try:
            cls.process.stdin.write(json.dumps(payload) + "\n")
            cls.process.stdin.flush()
            answer = cls.process.stdout.readline().strip()
        except (BrokenPipeError, OSError):
            answer = ""
        if not answer:
            error = cls.process.stderr.read() if cls.process.stderr else ""
            cls.process = None
            raise MissingDependencyError(f"espeak-ng failed ({error.strip()[-400:]}); {_INSTALL_HINT}")
        return answer


def _run_child(voice: str, words_per_minute: int, sentences: list[str]) -> dict:
    check_available()
    with tempfile.TemporaryDirectory(prefix="dystream-espeak-") as tmp:
        result = Path(tmp) / "result.npz"
        answer = _Child.request({"voice": voice, "rate": words_per_minute, "sentences": sentences,
                                 "output": str(result)})
        if answer != "ok":
            raise InputError(answer)
        with np.load(result, allow_pickle=False) as z:
            out = {"meta": json.loads(str(z["meta"]))}
            for i in range(len(sentences)):
                out[i] = np.array(z[f"audio_{i}"])
    return out


def synthesize(voice: str, sentences: list[str], *, duration_stretch: float = 1.0) -> list[Utterance]:
    """One :class:`Utterance` per sentence, all from one espeak-ng child process."""
    if not sentences:
        return []
    rate = int(round(_DEFAULT_WORDS_PER_MINUTE / max(duration_stretch, 0.1)))
    raw = _run_child(voice, rate, sentences)
    engine_rate = raw["meta"]["sample_rate"]
    utterances = []
    for i, sentence in enumerate(sentences):
        events = raw["meta"]["sentences"][i]
        audio = to_mono_16k(raw[i].astype(np.float32) / 32768.0, engine_rate, source=voice, note=False)
        total = len(audio) / SAMPLE_RATE
        starts = [(to_arpabet(m), t / 1000.0) for m, t in events["phonemes"]]
        phones = []
        for k, (phone, start) in enumerate(starts):
            end = starts[k + 1][1] if k + 1 < len(starts) else min(events["end_ms"] / 1000.0, total)
            if end > start:
                phones.append((phone, start, end))
        spoken = [p for p in phones if p[0] != "pau"]
        if not spoken:
            raise InputError(f"espeak-ng produced no speech for {sentence!r}")
        clip, offset, limit = cut_sentence(audio, spoken[0][1], spoken[-1][2])
        first, last = phones.index(spoken[0]), phones.index(spoken[-1])
        kept = [(p, max(s - offset, 0.0), min(e - offset, limit)) for p, s, e in phones[first:last + 1]]
        # words: from each word event to the last spoken phone before the next word;
        # the event's text position names the word (espeak may join short words)
        word_starts = [t / 1000.0 for t, _, _ in events["words"]]
        names = [" ".join(words_of(sentence[pos - 1:pos - 1 + length])) for _, pos, length in events["words"]]
        words = []
        for k, (name, start) in enumerate(zip(names, word_starts)):
            stop = word_starts[k + 1] if k + 1 < len(word_starts) else float("inf")
            inside = [p for p in spoken if start - 1e-3 <= p[1] < stop]
            if inside:
                words.append((name, max(inside[0][1] - offset, 0.0), min(inside[-1][2] - offset, limit)))
        utterances.append(Utterance(sentence, clip, kept, words))
    return utterances


# ---- child process: the only code that loads libespeak-ng ----

def _child() -> int:
    """Serve requests (one JSON line each) until stdin closes; answer "ok" or an error line."""
    import ctypes

    import espeakng_loader

    class Event(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                    ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                    ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                    ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    synchronous, phoneme_events = 2, 1
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    rate = lib.espeak_Initialize(synchronous, 0, espeakng_loader.get_data_path().encode(), phoneme_events)
    if rate <= 0:
        print("espeak-ng could not start", file=sys.stderr)
        return 1

    chunks: list[np.ndarray] = []
    current: dict = {}
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                     ctypes.POINTER(Event))

    def on_audio(wav, num_samples, events):
        if num_samples > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        k = 0
        while events[k].type != 0:  # espeakEVENT_LIST_TERMINATED
            event = events[k]
            if event.type == 7:  # phoneme
                current["phonemes"].append([event.id.decode(errors="replace"), event.audio_position])
            elif event.type == 1:  # word: time, 1-based character position, length
                current["words"].append([event.audio_position, event.text_position, event.length])
            elif event.type in (5, 6):  # sentence end / message end
                current["end_ms"] = max(current["end_ms"], event.audio_position)
            k += 1
        return 0

    keep_alive = callback_type(on_audio)
    lib.espeak_SetSynthCallback(keep_alive)

    def serve(request: dict) -> str:
        """One request (in the fork): "ok" with audio and events in its output file, or an error."""
        voice, words_per_minute = request["voice"], int(request["rate"])
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            return f"espeak-ng has no voice {voice!r}"
        lib.espeak_SetParameter(1, words_per_minute, 0)  # espeakRATE, absolute
        arrays, meta = {}, []
        for i, sentence in enumerate(request["sentences"]):
            lib.espeak_ng_SetRandSeed(sentence_seed(voice, words_per_minute, sentence))
            chunks.clear()
            current.clear()
            current.update({"phonemes": [], "words": [], "end_ms": 0})
            text = sentence.encode()
            lib.espeak_Synth(ctypes.c_char_p(text), len(text) + 1, 0, 1, 0, 1, None, None)
            lib.espeak_Synchronize()
            audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
            arrays[f"audio_{i}"] = audio.astype(np.int16)
            current["end_ms"] = current["end_ms"] or int(len(audio) * 1000 / rate)
            meta.append(dict(current))
        arrays["meta"] = np.array(json.dumps({"sample_rate": rate, "sentences": meta}))
        np.savez(request["output"], **arrays)
        return "ok"

    for line in sys.stdin:
        request = json.loads(line)
        # served by a fork: this process never speaks, so every request starts from the
        # engine as it was after start-up (see the module docstring)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            answer = "espeak-ng failed"
            try:
                os.close(read_end)
                answer = serve(request)
            except Exception as exc:  # reported to the parent, which raises it
                answer = f"espeak-ng failed ({exc})"
            finally:
                os.write(write_end, answer.encode())
                os._exit(0)  # no clean-up of this process's Python state in the copy
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read().decode()
        os.waitpid(pid, 0)
        print(answer or "espeak-ng failed", flush=True)
    lib.espeak_Terminate()
    return 0


if __name__ == "__main__":
    sys.exit(_child())
