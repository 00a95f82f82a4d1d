"""Toy two-party conversations without any TTS engine, for tests and smoke runs.

Labels (phrases, words, phones, backchannels) are drawn at random with
speech-like durations; each party's audio is a buzz whose loudness follows its
phones (vowels loud, consonants soft, bilabial closures near silent, pauses
silent), so audio envelope, lip aperture and phone labels agree the way they do
in the real engine's output. Motion comes from the real motion rules.
"""

from __future__ import annotations

import numpy as np

from dystream.config import FRAMES_PER_SECOND, SAMPLE_RATE
from dystream.data.behaviour import VOWELS, animate_party, sample_style
from dystream.data.schema import Conversation, PartyLabels

_CONSONANTS = ("p b m f v t d n l s z k g r w th sh hh y ch").split()
_VOWEL_LIST = sorted(VOWELS)
_CONTENT = "people weather garden morning picture problem window kitchen station music".split()
_FUNCTION = "the and of to it is".split()
# Loudness of the buzz per phone class (fraction of full scale).
_VOWEL_LOUDNESS = 0.25
_CONSONANT_LOUDNESS = 0.06
_CLOSURE_LOUDNESS = 0.01


def _phrase(rng: np.random.Generator, start: float, max_end: float) -> tuple[list, list, float]:
    """Phones and words of one phrase from ``start``; returns (phones, words, end)."""
    phones: list[list] = []
    words: list[list] = []
    t = start
    for _ in range(int(rng.integers(3, 9))):
        word_start = t
        for _ in range(int(rng.integers(1, 4))):
            consonant = _CONSONANTS[int(rng.integers(len(_CONSONANTS)))]
            vowel = _VOWEL_LIST[int(rng.integers(len(_VOWEL_LIST)))]
            for phone, (lo, hi) in ((consonant, (0.05, 0.11)), (vowel, (0.07, 0.2))):
                d = float(rng.uniform(lo, hi))
                phones.append([phone, round(t, 4), round(t + d, 4)])
                t += d
        text = (_CONTENT if rng.random() < 0.6 else _FUNCTION)[int(rng.integers(6))]
        words.append([text, round(word_start, 4), round(t, 4)])
        if t > max_end:
            break
    return phones, words, t


def _audio_for(phones: list[list], num_samples: int, rng: np.random.Generator) -> np.ndarray:
    envelope = np.zeros(num_samples, dtype=np.float32)
    for phone, start, end in phones:
        a, b = int(start * SAMPLE_RATE), min(int(end * SAMPLE_RATE), num_samples)
        if phone in VOWELS:
            level = _VOWEL_LOUDNESS
        elif phone in ("p", "b", "m"):
            level = _CLOSURE_LOUDNESS
        else:
            level = _CONSONANT_LOUDNESS
        envelope[a:b] = level
    # 10 ms ramps so the envelope has no clicks.
    ramp = np.ones(160, dtype=np.float32) / 160
    envelope = np.convolve(envelope, ramp, mode="same")
    t = np.arange(num_samples) / SAMPLE_RATE
    buzz = np.sign(np.sin(2 * np.pi * float(rng.uniform(100, 200)) * t)) * 0.7
    buzz += rng.standard_normal(num_samples) * 0.3
    return (envelope * buzz).astype(np.float32)


def make_toy_conversation(rng: np.random.Generator, seconds: float = 60.0,
                          conv_id: str = "toy-0", split: str = "test") -> Conversation:
    """One conversation of about ``seconds``: alternating turns, pauses, backchannels."""
    labels = [PartyLabels(), PartyLabels()]
    t = 0.5
    speaker = 0
    while t < seconds - 3.0:
        for _ in range(int(rng.integers(1, 4))):
            phones, words, end = _phrase(rng, t, min(t + 4.0, seconds - 1.0))
            lab = labels[speaker]
            lab.phones += phones
            lab.words += words
            lab.phrases.append([round(t, 4), round(end, 4)])
            listener = labels[1 - speaker]
            if rng.random() < 0.25 and end + 0.9 < seconds:
                bc_start = end + float(rng.uniform(0.15, 0.35))
                listener.backchannels.append([round(bc_start, 4), round(bc_start + 0.35, 4)])
                listener.phones += [["m", round(bc_start, 4), round(bc_start + 0.15, 4)],
                                    ["ah", round(bc_start + 0.15, 4), round(bc_start + 0.35, 4)]]
            t = end + float(rng.uniform(0.35, 0.8))
            if t > seconds - 3.0:
                break
        speaker = 1 - speaker
        t += float(rng.uniform(0.2, 0.8))
    num_frames = int(seconds * FRAMES_PER_SECOND)
    num_samples = num_frames * SAMPLE_RATE // FRAMES_PER_SECOND
    for lab in labels:
        lab.phones.sort(key=lambda p: p[1])
        lab.backchannels.sort()
    audio = np.stack([_audio_for(lab.phones, num_samples, rng) for lab in labels])
    styles = [sample_style(rng) for _ in range(2)]
    motion = np.zeros((2, num_frames, len(styles[0]["neutral"])), dtype=np.float32)
    for p in range(2):
        motion[p], labels[p] = animate_party(labels[p], labels[1 - p], audio[p], num_frames,
                                             styles[p], rng)
    return Conversation(id=conv_id, split=split, audio=audio, motion=motion,
                        voices=["toy-a", "toy-b"], labels=labels, style=styles)
