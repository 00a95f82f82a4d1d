"""The conversation script: who says what when, laid out on one timeline.

Turns alternate between parties A and B with gaps; sometimes the next speaker
starts early (overlap) or cuts the other off (interruption: the interrupted
phrase stops shortly after the interruption starts); sometimes both are quiet
for a while. Inside a turn, sentences are phrases separated by pauses, and a
sentence's own long internal pauses (commas) split it into phrases too. The
listener drops backchannels ("yeah", "right") into the speaker's pauses, in
the listener's own voice.

All sentences of a party are synthesized in one engine call; the layout then
places the resulting utterances. Times in the labels are absolute seconds in
the conversation; the audio of each party holds only that party.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from dystream.config import SAMPLE_RATE, SAMPLES_PER_FRAME
from dystream.data import augment, text
from dystream.data.schema import PartyLabels
from dystream.data.tts import Utterance, synthesize

# Layout probabilities and ranges (seconds); see the module docstring.
_GAP_MEAN, _GAP_SPREAD = 0.45, 0.25
_P_OVERLAP = 0.10          # next turn starts before the previous one ends
_P_INTERRUPT = 0.06        # ... and the previous speaker stops
_P_LONG_SILENCE = 0.07     # both quiet
_PHRASE_PAUSE = (0.15, 0.55)
_P_BACKCHANNEL = 0.35      # per pause of the speaker long enough for one
_INTERNAL_PAUSE_SPLIT = 0.12  # a pause inside a sentence this long ends a phrase
_SECONDS_PER_WORD = 0.32   # to plan how much text fills the target length
_PEAK_LIMIT = 0.98


@dataclass
class ScriptResult:
    audio: np.ndarray                         # float32 [2, samples], whole frames
    labels: list[PartyLabels]
    info: dict = field(default_factory=dict)  # settings worth keeping (speeds, augmentation)
    timings: dict = field(default_factory=dict)


@dataclass
class _Placed:
    party: int
    utterance: Utterance
    start: float
    cut: float | None = None  # interrupted: audio stops at this time (absolute)
    backchannel: bool = False

    @property
    def end(self) -> float:
        end = self.start + self.utterance.duration
        return min(end, self.cut) if self.cut is not None else end


def _plan_turns(rng: np.random.Generator, split: str, target_seconds: float,
                party: int) -> list[tuple[int, list[str]]]:
    """Turns (party, sentences), alternating from ``party``, of about ``target_seconds``."""
    turns: list[tuple[int, list[str]]] = []
    planned = 0.0
    while planned < target_seconds:
        sentences = text.turn(rng, split)
        turns.append((party, sentences))
        words = sum(len(s.split()) for s in sentences)
        planned += words * _SECONDS_PER_WORD + _GAP_MEAN + 0.3 * (len(sentences) - 1)
        party = 1 - party
    return turns


def _phrases_of(utt: Utterance, start: float, end_limit: float) -> list[list[float]]:
    """Phrase intervals of a placed utterance: split at long internal pauses."""
    phrases: list[list[float]] = []
    current = None
    for phone, a, b in utt.phones:
        a, b = a + start, min(b + start, end_limit)
        if a >= end_limit:
            break
        if phone == "pau" and b - a >= _INTERNAL_PAUSE_SPLIT:
            if current is not None:
                phrases.append(current)
                current = None
            continue
        if phone == "pau":
            continue
        if current is None:
            current = [a, b]
        else:
            current[1] = b
    if current is not None:
        phrases.append(current)
    return phrases


def build(rng: np.random.Generator, split: str, voices: list[str], target_seconds: float,
          timbres: tuple[float, float] = (1.0, 1.0)) -> ScriptResult:
    """Synthesize and lay out one two-party conversation of at least ``target_seconds``.

    ``timbres``: per party, the pitch-and-formant scale of its voice (see
    :func:`dystream.data.tts.synthesize`); 1 = the voice as the engine makes it.
    """
    timings = {"tts": 0.0, "augment": 0.0}
    speeds = [float(rng.uniform(0.9, 1.12)) for _ in range(2)]
    # tape speed is drawn first: the layout must be long enough to stay >= target after it
    speed = augment.sample_speed(rng)
    needed = target_seconds * speed
    spoken: list[list[Utterance]] = [[], []]
    backchannels: list[list[Utterance]] = []

    def speak(new_turns: list[tuple[int, list[str]]], with_backchannels: bool) -> None:
        """One engine call per party: its sentences (then its backchannel words, once)."""
        t0 = time.perf_counter()
        for party in range(2):
            sentences = [s for p, turn in new_turns if p == party for s in turn]
            words = text.BACKCHANNELS if with_backchannels else []
            if sentences or words:
                utts = synthesize(voices[party], sentences + words, speed=speeds[party], timbre=timbres[party])
                spoken[party] += utts[:len(sentences)]
                if with_backchannels:
                    backchannels.append(utts[len(sentences):])
        timings["tts"] += time.perf_counter() - t0

    # lay out turns; plan and speak more while the conversation is shorter than asked
    queue = _plan_turns(rng, split, target_seconds, int(rng.integers(2)))
    speak(queue, with_backchannels=True)
    turns: list[tuple[int, list[str]]] = []
    placed: list[_Placed] = []
    cursor = [0, 0]  # next utterance of each party
    t = float(rng.uniform(0.2, 1.0))
    previous: list[_Placed] = []
    party_end = [0.0, 0.0]
    while True:
        for party, sentences in queue:
            if previous:
                prev_end = previous[-1].end
                roll = rng.random()
                if roll < _P_INTERRUPT and previous[-1].utterance.duration > 1.0:
                    start = prev_end - float(rng.uniform(0.4, 0.9))
                    start = max(start, previous[-1].start + 0.4)
                    # the interrupted speaker gives up a little after being cut off
                    previous[-1].cut = start + float(rng.uniform(0.15, 0.4))
                elif roll < _P_INTERRUPT + _P_OVERLAP:
                    start = prev_end - float(rng.uniform(0.1, 0.5))
                elif roll < _P_INTERRUPT + _P_OVERLAP + _P_LONG_SILENCE:
                    start = prev_end + float(rng.uniform(1.5, 3.5))
                else:
                    start = prev_end + float(np.clip(rng.normal(_GAP_MEAN, _GAP_SPREAD), 0.08, 1.5))
                # never on top of this party's own last utterance
                t = max(start, party_end[party] + 0.1, 0.0)
            previous = []
            for _ in sentences:
                item = _Placed(party, spoken[party][cursor[party]], t)
                cursor[party] += 1
                placed.append(item)
                previous.append(item)
                t = item.end + float(rng.uniform(*_PHRASE_PAUSE))
            party_end[party] = previous[-1].start + previous[-1].utterance.duration
        turns += queue
        laid_out = max(p.end for p in placed)
        if laid_out >= needed:
            break
        queue = _plan_turns(rng, split, needed - laid_out, 1 - turns[-1][0])
        speak(queue, with_backchannels=False)

    # backchannels from the listener in the speaker's pauses
    speech = sorted(placed, key=lambda p: p.start)
    busy = [[(p.start, p.end) for p in speech if p.party == q] for q in range(2)]
    extra: list[_Placed] = []
    for item, nxt in zip(speech, speech[1:] + [None]):
        listener = 1 - item.party
        pause_end = nxt.start if nxt is not None and nxt.party == item.party else item.end + 1.0
        if nxt is None or pause_end - item.end < 0.35 or rng.random() >= _P_BACKCHANNEL:
            continue
        bc = backchannels[listener][int(rng.integers(len(backchannels[listener])))]
        start = item.end + float(rng.uniform(0.1, 0.35))
        end = start + bc.duration
        if any(a < end + 0.1 and start - 0.1 < b for a, b in busy[listener]):
            continue
        busy[listener].append((start, end))
        extra.append(_Placed(listener, bc, start, backchannel=True))
    placed += extra

    # render and label
    duration = max(p.end for p in placed) + float(rng.uniform(0.3, 1.0))
    num_samples = int(np.ceil(duration * SAMPLE_RATE))
    tracks = np.zeros((2, num_samples), dtype=np.float32)
    labels = [PartyLabels(), PartyLabels()]
    for item in sorted(placed, key=lambda p: p.start):
        utt, lab = item.utterance, labels[item.party]
        a = int(round(item.start * SAMPLE_RATE))
        clip = utt.audio
        if item.cut is not None:
            clip = clip[:max(int(round((item.cut - item.start) * SAMPLE_RATE)), 0)].copy()
            fade = min(160, len(clip))
            clip[len(clip) - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        tracks[item.party, a:a + len(clip)] += clip[:num_samples - a]
        end_limit = item.end
        for phone, s, e in utt.phones:
            if item.start + s < end_limit:
                lab.phones.append([phone, item.start + s, min(item.start + e, end_limit)])
        for word, s, e in utt.words:
            if item.start + s < end_limit:
                lab.words.append([word, item.start + s, min(item.start + e, end_limit)])
        if item.backchannel:
            lab.backchannels.append([item.start + utt.phones[0][1], end_limit])
        else:
            lab.phrases += _phrases_of(utt, item.start, end_limit)

    # augmentation: one tape speed for the timeline, the rest per party
    t0 = time.perf_counter()
    party_aug = [augment.sample_augmentation(rng) for _ in range(2)]
    sped = [augment.change_speed(augment.level_speech(tracks[p]), speed) for p in range(2)]
    frames = int(np.ceil(max(len(s) for s in sped) / SAMPLES_PER_FRAME))
    audio = np.zeros((2, frames * SAMPLES_PER_FRAME), dtype=np.float32)
    for p in range(2):
        audio[p, :len(sped[p])] = augment.apply(sped[p], party_aug[p], rng)
        peak = float(np.abs(audio[p]).max())
        if peak > _PEAK_LIMIT:  # never clip in the 16-bit FLAC
            audio[p] *= _PEAK_LIMIT / peak
    timings["augment"] = time.perf_counter() - t0
    for lab in labels:
        _rescale_times(lab, 1.0 / speed)
    info = {"speech_rate": speeds, "tape_speed": speed, "timbre": [round(float(t), 4) for t in timbres],
            "augmentation": [a.as_dict() for a in party_aug],
            "interruptions": sum(p.cut is not None for p in placed),
            "sentences": [[s for p, turn in turns if p == party for s in turn] for party in range(2)]}
    return ScriptResult(audio, labels, info, timings)


def _rescale_times(lab: PartyLabels, scale: float) -> None:
    lab.phones = [[p, round(s * scale, 4), round(e * scale, 4)] for p, s, e in lab.phones]
    lab.words = [[w, round(s * scale, 4), round(e * scale, 4)] for w, s, e in lab.words]
    lab.phrases = [[round(s * scale, 4), round(e * scale, 4)] for s, e in lab.phrases]
    lab.backchannels = [[round(s * scale, 4), round(e * scale, 4)] for s, e in lab.backchannels]
