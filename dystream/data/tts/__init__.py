"""Text-to-speech back ends with true per-phone timing.

Every back end turns a list of sentences into one :class:`Utterance` per
sentence: 16 kHz mono audio cut tightly around the speech, the phones (ARPAbet,
lower case, "pau" for silence inside the sentence) and words with times in
seconds from the start of that audio, as the engine itself timed them.

The core imports only this module. Each engine lives in its own module,
imported only when one of its voices is asked for (espeak-ng, GPL, also runs in
a separate process; flite and Festival are programs run as child processes).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np

from dystream.errors import InputError


@dataclass
class Utterance:
    """One synthesized sentence."""

    text: str
    audio: np.ndarray                 # float32 [samples] at SAMPLE_RATE
    phones: list[tuple[str, float, float]]
    words: list[tuple[str, float, float]]

    @property
    def duration(self) -> float:
        from dystream.config import SAMPLE_RATE

        return len(self.audio) / SAMPLE_RATE


def synthesize(voice_id: str, sentences: list[str], *, speed: float = 1.0, timbre: float = 1.0) -> list[Utterance]:
    """Speak each sentence with one voice (``engine:name``, see :mod:`dystream.data.voices`).

    ``speed`` > 1 speaks slower (the engine stretches durations, phone times follow).
    ``timbre`` != 1 makes a new speaker of the voice: pitch and formants are scaled
    by ``timbre`` (the engine speaks ``timbre`` times slower, then the audio is
    played ``timbre`` times faster), so the speaking rate and timing stay as asked.
    """
    if not timbre > 0:
        raise InputError(f"timbre must be positive, got {timbre}")
    if abs(timbre - 1.0) > 1e-6:
        from dystream.data.augment import change_speed

        slow = synthesize(voice_id, sentences, speed=speed * timbre)
        scale = 1.0 / timbre
        return [Utterance(u.text, change_speed(u.audio, timbre),
                          [(p, s * scale, e * scale) for p, s, e in u.phones],
                          [(w, s * scale, e * scale) for w, s, e in u.words]) for u in slow]
    engine, _, name = voice_id.partition(":")
    if engine == "flite":
        from dystream.data.tts import flite

        return flite.synthesize(name, sentences, duration_stretch=speed)
    if engine == "espeak":
        from dystream.data.tts import espeak  # GPL back end: imported only on request

        return espeak.synthesize(name, sentences, duration_stretch=speed)
    if engine == "festival":
        from dystream.data.tts import festival

        return festival.synthesize(name, sentences, duration_stretch=speed)
    from dystream.data.voices import known_voices

    raise InputError(f"unknown voice {voice_id!r}; known voices: {', '.join(known_voices())}")


_FADE_SAMPLES = 80  # 5 ms ramps at the cut ends: no click where a sentence is cut out
# Audio kept around each sentence beyond its first and last phone (seconds): enough for
# the release of a final stop, short enough to keep pauses ours.
_LEAD_IN, _TAIL = 0.02, 0.05


def cut_sentence(audio: np.ndarray, first_start: float, last_end: float) -> tuple[np.ndarray, float, float]:
    """One sentence cut out of an engine's audio: from ``_LEAD_IN`` before its first spoken
    phone's start to ``_TAIL`` after its last one's end (clamped to the audio), faded in and
    out; returns (clip, its start in seconds, its length in seconds), for every back end
    to shift its phone and word times by."""
    from dystream.config import SAMPLE_RATE

    a = int(round(max(first_start - _LEAD_IN, 0.0) * SAMPLE_RATE))
    b = min(int(round((last_end + _TAIL) * SAMPLE_RATE)), len(audio))
    clip = audio[a:b].copy()
    fade = min(_FADE_SAMPLES, len(clip) // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        clip[:fade] *= ramp
        clip[-fade:] *= ramp[::-1]
    return clip, a / SAMPLE_RATE, len(clip) / SAMPLE_RATE


def words_of(sentence: str) -> list[str]:
    """The words of a sentence as the engines read them: lower case, no punctuation."""
    cleaned = "".join(c.lower() if c.isalpha() or c == "'" else " " for c in sentence)
    return cleaned.split()


def assign_phones_to_words(spoken: list[str], expected: list[list[str]]) -> list[tuple[int, int]]:
    """For each word, the [first, last+1) span of ``spoken`` phones that belong to it.

    ``spoken`` is the phone sequence the engine produced (no pauses), ``expected``
    each word's dictionary phones. The two differ where the engine applies
    post-lexical rules, so they are aligned (difflib) rather than counted; a
    word whose phones all vanished gets an empty span at its neighbour's edge.
    """
    flat: list[str] = []
    owner: list[int] = []
    for k, phones in enumerate(expected):
        flat += phones
        owner += [k] * len(phones)
    spoken_owner = np.full(len(spoken), -1)
    matcher = difflib.SequenceMatcher(a=flat, b=spoken, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag in ("equal", "replace") and a1 > a0:
            for j in range(b0, b1):
                # spread the spoken phones of a replaced run over the expected ones
                i = a0 + (j - b0) * (a1 - a0) // max(b1 - b0, 1)
                spoken_owner[j] = owner[i]
    # inserted phones join the word before them (or after, at the start)
    for j in range(len(spoken)):
        if spoken_owner[j] < 0:
            spoken_owner[j] = spoken_owner[j - 1] if j > 0 else -1
    for j in range(len(spoken) - 1, -1, -1):
        if spoken_owner[j] < 0:
            spoken_owner[j] = spoken_owner[j + 1] if j + 1 < len(spoken) else 0
    # keep owners monotone so every word is one contiguous span
    spoken_owner = np.maximum.accumulate(spoken_owner) if len(spoken) else spoken_owner
    spans = []
    cursor = 0
    for k in range(len(expected)):
        idx = np.nonzero(spoken_owner == k)[0]
        if len(idx):
            spans.append((int(idx[0]), int(idx[-1]) + 1))
            cursor = int(idx[-1]) + 1
        else:
            spans.append((cursor, cursor))
    return spans
