"""Offline English for the synthetic conversations: a small grammar over word lists.

Sentences are built from templates whose slots are filled from word lists, so
the text varies (questions, statements, opinions, stories, short answers) and
turns can be short ("Sure.") or long (several sentences). Nothing is
downloaded; the lists below are the whole vocabulary.

Texts are kept disjoint between splits by hashing each sentence into a split:
a sentence whose hash lands in the test range is never used for training.
"""

from __future__ import annotations

import hashlib

import numpy as np

# Share of sentences (by hash) that belong to each split; the rest is train.
_SPLIT_BUCKETS = {"train": (0, 80), "val": (80, 88), "test": (88, 100)}

_NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack",
          "Laura", "Martin", "Nina", "Oscar", "Paula", "Robert", "Sarah", "Thomas", "Vera", "Walter"]
_PLACES = ["the market", "the station", "the library", "the office", "the park", "the beach",
           "the city centre", "the museum", "the old bridge", "the harbour", "the bakery",
           "the hospital", "the school", "the garden", "the mountains", "the river", "the airport",
           "the cinema", "the village", "the kitchen"]
_THINGS = ["the new project", "the garden", "the weather", "the report", "the concert", "the trip",
           "the dinner", "the meeting", "the book", "the movie", "the car", "the house",
           "the budget", "the schedule", "the recipe", "the bicycle", "the painting", "the game",
           "the election", "the neighbours", "the holiday", "the interview", "the presentation",
           "the course", "the camera", "the software", "the flat", "the dog", "the storm"]
_ADJECTIVES = ["lovely", "strange", "difficult", "wonderful", "boring", "expensive", "quiet",
               "busy", "surprising", "beautiful", "complicated", "funny", "useful", "terrible",
               "interesting", "simple", "exciting", "careful", "late", "perfect"]
_VERBS_PAST = ["visited", "cleaned", "finished", "started", "missed", "watched", "fixed",
               "painted", "changed", "checked", "booked", "ordered", "planned", "moved", "found",
               "forgot", "sold", "bought", "built", "read"]
_VERBS_BASE = ["visit", "clean", "finish", "start", "watch", "fix", "paint", "change", "check",
               "book", "order", "plan", "move", "find", "sell", "buy", "build", "read", "call",
               "try"]
_TIMES = ["yesterday", "last week", "this morning", "on Monday", "two days ago", "last summer",
          "at night", "after lunch", "in the spring", "last year", "on the weekend", "tonight"]
_FUTURE = ["tomorrow", "next week", "on Friday", "later today", "next month", "in the autumn",
           "after work", "soon"]
_FEELINGS = ["happy", "tired", "worried", "excited", "surprised", "relieved", "confused", "glad"]
_OPENERS = ["Well", "You know", "Actually", "Honestly", "So", "Anyway", "I mean", "Oh"]
_ANSWERS = ["Sure.", "I think so.", "Not really.", "Maybe.", "Of course.", "No idea.",
            "That makes sense.", "Exactly.", "I guess so.", "Absolutely.", "Good question.",
            "Oh, really?", "Why not?", "Fair enough.", "Not yet.", "Sounds good."]
_TEMPLATES = [
    "{opener}, I {past} {thing} {time}.",
    "I {past} {thing} {time}, and it was {adj}.",
    "Did you {base} {thing} {time}?",
    "We should {base} {thing} {future}.",
    "{name} {past} {thing} at {place} {time}.",
    "Have you been to {place} {time}?",
    "I was really {feeling} when {name} {past} {thing}.",
    "{opener}, {thing} is {adj}, but I like it.",
    "I think {thing} was a bit {adj}.",
    "Do you want to go to {place} {future}?",
    "{name} told me that {thing} was {adj}.",
    "It took us three hours to {base} {thing}.",
    "My sister {past} {thing} {time}, and she was {feeling}.",
    "{opener}, we could meet at {place} {future}.",
    "Why was {thing} so {adj}?",
    "I never thought {thing} would be so {adj}.",
    "After that, {name} went to {place} and {past} {thing}.",
    "The problem is that {thing} is too {adj} for us.",
    "Can you help me {base} {thing} {future}?",
    "I remember when we {past} {thing} near {place}.",
    "{name} and I {past} {thing} {time}, which was {adj}.",
    "If it rains {future}, we will {base} {thing} at home.",
]

# What a listener says while the other talks; short words that flite speaks cleanly.
# ("mm-hm" and "hmm" are left out: flite spells them letter by letter.)
BACKCHANNELS = ["yeah", "right", "okay", "uh huh", "I see", "sure", "oh", "wow", "true", "nice"]


def _fill(template: str, rng: np.random.Generator) -> str:
    def pick(words: list[str]) -> str:
        return words[int(rng.integers(len(words)))]

    text = template.format(
        name=pick(_NAMES), place=pick(_PLACES), thing=pick(_THINGS), adj=pick(_ADJECTIVES),
        past=pick(_VERBS_PAST), base=pick(_VERBS_BASE), time=pick(_TIMES), future=pick(_FUTURE),
        feeling=pick(_FEELINGS), opener=pick(_OPENERS))
    return text[0].upper() + text[1:]


def split_of_text(sentence: str) -> str:
    """The one split a sentence may appear in (stable hash of its text)."""
    bucket = int.from_bytes(hashlib.blake2b(sentence.encode(), digest_size=4).digest(), "little") % 100
    for split, (low, high) in _SPLIT_BUCKETS.items():
        if low <= bucket < high:
            return split
    raise AssertionError("split buckets must cover 0..99")


def sentence(rng: np.random.Generator, split: str) -> str:
    """One sentence that belongs to ``split``."""
    if split not in _SPLIT_BUCKETS:
        raise ValueError(f"unknown split {split!r}")
    for _ in range(1000):
        if rng.random() < 0.15:
            text = _ANSWERS[int(rng.integers(len(_ANSWERS)))]
        else:
            text = _fill(_TEMPLATES[int(rng.integers(len(_TEMPLATES)))], rng)
        if split_of_text(text) == split:
            return text
    raise RuntimeError("could not draw a sentence for the split; the grammar is too small")


def turn(rng: np.random.Generator, split: str) -> list[str]:
    """The sentences of one turn: mostly 1-3, sometimes a long turn of up to 7."""
    if rng.random() < 0.2:
        count = int(rng.integers(4, 8))
    else:
        count = int(rng.integers(1, 4))
    return [sentence(rng, split) for _ in range(count)]
