"""The dataset format: shards of two-party conversations.

A dataset directory holds ``manifest.json`` and one folder per split::

    DIR/manifest.json              dataset settings, voices per split, shard list
    DIR/train/shard-00000.npz      a few conversations each
    DIR/val/...  DIR/test/...

Each shard is an uncompressed ``.npz`` with, for conversation ``i``:

* ``audio_i``  — uint8 bytes of a 2-channel 16 kHz FLAC: channel 0 is party A
  alone, channel 1 party B alone (silence while that party does not talk);
* ``motion_i`` — float32 [2, T, MOTION_DIM] at 25 fps, party A then B, in the
  layout of :mod:`dystream.motion`;
* ``meta``     — one JSON string: a list with, per conversation, its id, split,
  duration, voices, per-party style and labels (see :class:`Conversation`).

Shards are written to a temporary name and renamed when complete, so a shard
that exists is whole; an interrupted run resumes by skipping finished shards.
Shards made from real video use the same schema, with the labels they can give
(no phones).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dystream.config import FRAMES_PER_SECOND, SAMPLE_RATE
from dystream.motion import MOTION_DIM, NAMES

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")


@dataclass
class PartyLabels:
    """What one party does, with times in seconds.

    phones: [phone, start, end] (ARPAbet, lower case; "pau" for silence)
    words: [word, start, end]
    phrases: [start, end] of each spoken phrase (a turn is one or more phrases)
    backchannels: [start, end] of short listener responses ("mm-hm", "yeah")
    nods: [time, amplitude_radians] of each nod's lowest point (pitch peak)
    blinks: [time] of each blink's closure
    smiles: [start, end] of listening smiles
    """

    phones: list[list[Any]] = field(default_factory=list)
    words: list[list[Any]] = field(default_factory=list)
    phrases: list[list[float]] = field(default_factory=list)
    backchannels: list[list[float]] = field(default_factory=list)
    nods: list[list[float]] = field(default_factory=list)
    blinks: list[float] = field(default_factory=list)
    smiles: list[list[float]] = field(default_factory=list)


@dataclass
class Conversation:
    """Two parties, A (index 0) and B (index 1), each with own audio and motion."""

    id: str
    split: str
    audio: np.ndarray                 # float32 [2, samples] at SAMPLE_RATE
    motion: np.ndarray                # float32 [2, frames, MOTION_DIM] at FRAMES_PER_SECOND
    voices: list[str]                 # voice id per party
    labels: list[PartyLabels]         # per party
    style: list[dict[str, Any]] = field(default_factory=list)  # per party, sampled style
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[1])

    @property
    def duration(self) -> float:
        return self.audio.shape[1] / SAMPLE_RATE

    def speaking(self, party: int) -> np.ndarray:
        """Per-frame bool: the party is inside one of its phrases or backchannels."""
        mask = np.zeros(self.num_frames, dtype=bool)
        lab = self.labels[party]
        for start, end in [*lab.phrases, *lab.backchannels]:
            a = int(np.floor(start * FRAMES_PER_SECOND))
            b = int(np.ceil(end * FRAMES_PER_SECOND))
            mask[max(a, 0):max(b, 0)] = True
        return mask

    def validate(self) -> None:
        if self.audio.ndim != 2 or self.audio.shape[0] != 2:
            raise ValueError(f"{self.id}: audio must be [2, samples], got {self.audio.shape}")
        if self.motion.ndim != 3 or self.motion.shape[0] != 2 or self.motion.shape[2] != MOTION_DIM:
            raise ValueError(f"{self.id}: motion must be [2, frames, {MOTION_DIM}], got {self.motion.shape}")
        expected = self.audio.shape[1] * FRAMES_PER_SECOND // SAMPLE_RATE
        if abs(self.motion.shape[1] - expected) > 1:
            raise ValueError(f"{self.id}: {self.motion.shape[1]} motion frames for {expected} frames of audio")
        if len(self.labels) != 2 or len(self.voices) != 2:
            raise ValueError(f"{self.id}: needs labels and voices for both parties")


def _encode_audio(audio: np.ndarray) -> np.ndarray:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(audio.T, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def _decode_audio(data: np.ndarray) -> np.ndarray:
    import soundfile as sf

    audio, sr = sf.read(io.BytesIO(data.tobytes()), dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise ValueError(f"shard audio at {sr} Hz, expected {SAMPLE_RATE}")
    return np.ascontiguousarray(audio.T)


def write_shard(path: str | Path, conversations: list[Conversation]) -> Path:
    """Write conversations atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for i, conv in enumerate(conversations):
        conv.validate()
        arrays[f"audio_{i}"] = _encode_audio(conv.audio)
        arrays[f"motion_{i}"] = np.ascontiguousarray(conv.motion, dtype=np.float32)
        meta.append({
            "id": conv.id, "split": conv.split, "duration": conv.duration,
            "num_frames": conv.num_frames, "voices": list(conv.voices),
            "labels": [asdict(lab) for lab in conv.labels], "style": conv.style,
            "extra": conv.extra,
        })
    arrays["meta"] = np.array(json.dumps({
        "schema_version": SCHEMA_VERSION, "motion_names": list(NAMES),
        "fps": FRAMES_PER_SECOND, "sample_rate": SAMPLE_RATE, "conversations": meta,
    }))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_shard_meta(path: str | Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["meta"]))


def read_shard(path: str | Path, with_audio: bool = True) -> list[Conversation]:
    """Load every conversation of a shard; ``with_audio=False`` skips audio decoding."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        head = json.loads(str(z["meta"]))
        if head.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"{path}: schema version {head.get('schema_version')}, expected {SCHEMA_VERSION}")
        if list(head["motion_names"]) != list(NAMES):
            raise ValueError(f"{path}: motion layout differs from this version's; re-generate the data")
        out = []
        for i, m in enumerate(head["conversations"]):
            audio = _decode_audio(z[f"audio_{i}"]) if with_audio else np.zeros((2, 0), np.float32)
            out.append(Conversation(
                id=m["id"], split=m["split"], audio=audio, motion=np.array(z[f"motion_{i}"]),
                voices=m["voices"], labels=[PartyLabels(**lab) for lab in m["labels"]],
                style=m.get("style", []), extra=m.get("extra", {}),
            ))
    return out


def shard_paths(root: str | Path, split: str) -> list[Path]:
    """Finished shards of a split, in order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory not found: {root}")
    return sorted((root / split).glob("shard-*.npz"))


def iter_conversations(root: str | Path, split: str, with_audio: bool = True) -> Iterator[Conversation]:
    for shard in shard_paths(root, split):
        yield from read_shard(shard, with_audio=with_audio)
