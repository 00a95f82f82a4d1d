"""Make a synthetic dataset: plan conversations, generate them in parallel, write shards.

Determinism: every random choice of conversation ``i`` of split ``s`` comes from
``SeedSequence([seed, split_code, i])``, and which conversations go into which
shard is fixed by the plan, so the output is identical whatever ``workers``.
The plan itself (how many conversations, how long) comes from the seed and the
hours asked for.

Resume: the manifest written first records the settings; a second run into the
same folder with the same settings skips every shard that exists (shards are
written atomically, so an existing shard is whole) and one with different
settings is refused.

The test split always starts with ``long_test_conversations`` conversations of
5 to 5.5 minutes (for drift measurements), whatever the hours ask for.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dystream.config import SAMPLES_PER_FRAME
from dystream.data.schema import SCHEMA_VERSION, SPLITS, Conversation, write_shard
from dystream.errors import InputError

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
# Conversation length (seconds): log-uniform in this range, except the long test ones.
_MIN_SECONDS, _MAX_SECONDS = 20.0, 240.0
_LONG_SECONDS = (300.0, 330.0)
MANIFEST = "manifest.json"


@dataclass
class SynthSettings:
    """Everything that decides the dataset's content (recorded in the manifest)."""

    seed: int = 0
    hours: float = 1.0                          # conversation time over all splits
    split_fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.85, "val": 0.05, "test": 0.10})
    engines: list[str] = field(default_factory=lambda: ["flite", "espeak", "festival"])
    exclude_voices: list[str] = field(default_factory=list)  # voice ids left out of every split
    add_train_voices: list[str] = field(default_factory=list)  # voices of no split, added to training
    long_test_conversations: int = 10
    conversations_per_shard: int = 8
    min_seconds: float = _MIN_SECONDS
    max_seconds: float = _MAX_SECONDS
    # Training speakers only: each party's voice gets a pitch-and-formant scale drawn
    # log-uniformly from this range (new speakers from each engine voice); (1, 1) = off.
    train_timbre: tuple[float, float] = (0.88, 1.25)

    def validate(self) -> None:
        if not self.hours > 0:
            raise InputError(f"--hours must be positive, got {self.hours}")
        if set(self.split_fractions) != set(SPLITS) or any(v < 0 for v in self.split_fractions.values()):
            raise InputError(f"split hours need a non-negative share for each of {', '.join(SPLITS)}")
        if sum(self.split_fractions.values()) <= 0:
            raise InputError("split hours add up to zero")
        if self.conversations_per_shard < 1:
            raise InputError("--conversations-per-shard must be at least 1")
        if self.long_test_conversations < 0:
            raise InputError("--long-test-conversations must be 0 or more")
        if not 5.0 <= self.min_seconds <= self.max_seconds:
            raise InputError("conversation lengths need 5 <= --min-seconds <= --max-seconds")
        low, high = self.train_timbre
        if not 0.5 <= low <= high <= 2.0:
            raise InputError(f"--train-timbre needs 0.5 <= LOW <= HIGH <= 2, got {low},{high}")


@dataclass(frozen=True)
class PlannedConversation:
    split: str
    index: int
    target_seconds: float

    @property
    def id(self) -> str:
        return f"{self.split}-{self.index:06d}"


def plan(settings: SynthSettings) -> dict[str, list[PlannedConversation]]:
    """The conversations of each split, in order (depends only on the settings)."""
    total_share = sum(settings.split_fractions.values())
    out: dict[str, list[PlannedConversation]] = {}
    for split in SPLITS:
        rng = np.random.default_rng(np.random.SeedSequence([settings.seed, SPLIT_CODES[split], 1_000_000_007]))
        budget = settings.hours * 3600.0 * settings.split_fractions[split] / total_share
        convs: list[PlannedConversation] = []
        if split == "test":
            for _ in range(settings.long_test_conversations):
                convs.append(PlannedConversation(split, len(convs), float(rng.uniform(*_LONG_SECONDS))))
            budget -= sum(c.target_seconds for c in convs)
        low, high = np.log(settings.min_seconds), np.log(settings.max_seconds)
        while budget > 0:
            seconds = float(np.exp(rng.uniform(low, high)))
            seconds = min(seconds, max(budget, settings.min_seconds))
            convs.append(PlannedConversation(split, len(convs), seconds))
            budget -= seconds
        out[split] = convs
    return out


def shard_plan(settings: SynthSettings) -> list[tuple[str, int, list[PlannedConversation]]]:
    """(split, shard number, conversations) for every shard."""
    shards = []
    for split, convs in plan(settings).items():
        k = settings.conversations_per_shard
        for number, first in enumerate(range(0, len(convs), k)):
            shards.append((split, number, convs[first:first + k]))
    return shards


def shard_path(root: Path, split: str, number: int) -> Path:
    return root / split / f"shard-{number:05d}.npz"


def generate_conversation(planned: PlannedConversation, settings: SynthSettings,
                          voices_by_split: dict[str, list[str]],
                          timings: dict[str, float] | None = None) -> Conversation:
    """Script, speech and motion of one planned conversation (pure function of its inputs)."""
    from dystream.data import behaviour, script

    rng = np.random.default_rng(np.random.SeedSequence(
        [settings.seed, SPLIT_CODES[planned.split], planned.index]))
    pool = voices_by_split[planned.split]
    if len(pool) >= 2:
        share = None  # val/test: every voice alike
        if planned.split == "train":
            # each engine gets an equal share of the training parties, however many voices it has
            engines = [v.split(":", 1)[0] for v in pool]
            weights = np.array([1.0 / engines.count(e) for e in engines])
            share = weights / weights.sum()
        chosen = rng.choice(len(pool), size=2, replace=False, p=share)
        voices = [pool[int(chosen[0])], pool[int(chosen[1])]]
    else:  # one voice in the split: two "people" with one voice, different speed/augmentation
        voices = [pool[0], pool[0]]
    timbres = (1.0, 1.0)
    if planned.split == "train" and tuple(settings.train_timbre) != (1.0, 1.0):
        # its own stream, so the other draws (and val/test) do not depend on this setting
        timbre_rng = np.random.default_rng(np.random.SeedSequence(
            [settings.seed, SPLIT_CODES[planned.split], planned.index, 1]))
        low, high = np.log(settings.train_timbre)
        timbres = tuple(float(np.exp(timbre_rng.uniform(low, high))) for _ in range(2))
    result = script.build(rng, planned.split, voices, planned.target_seconds, timbres)

    t0 = time.perf_counter()
    num_frames = result.audio.shape[1] // SAMPLES_PER_FRAME
    styles = [behaviour.sample_style(rng) for _ in range(2)]
    motions = []
    labels = list(result.labels)
    for party in range(2):
        m, own = behaviour.animate_party(labels[party], labels[1 - party], result.audio[party],
                                         num_frames, styles[party], rng)
        labels[party] = own
        motions.append(np.asarray(m, dtype=np.float32))
    motion = np.stack(motions)
    motion_seconds = time.perf_counter() - t0
    if timings is not None:
        for key, value in result.timings.items():
            timings[key] = timings.get(key, 0.0) + value
        timings["motion"] = timings.get("motion", 0.0) + motion_seconds
    return Conversation(id=planned.id, split=planned.split, audio=result.audio, motion=motion,
                        voices=voices, labels=labels, style=styles,
                        extra={"target_seconds": round(planned.target_seconds, 3), **result.info})


def _make_conversation(task: tuple[PlannedConversation, SynthSettings, dict]) -> tuple[Conversation, dict]:
    planned, settings, voices = task
    timings: dict[str, float] = {}
    return generate_conversation(planned, settings, voices, timings), timings


def _make_shard(task: tuple[Path, str, int, list[PlannedConversation], SynthSettings, dict]
                ) -> tuple[dict[str, Any], dict[str, float]]:
    root, split, number, convs, settings, voices = task
    timings: dict[str, float] = {}
    conversations = [generate_conversation(c, settings, voices, timings) for c in convs]
    result = _write(root, split, number, conversations, timings)
    result["target_seconds"] = sum(c.target_seconds for c in convs)
    return result, timings


def _write(root: Path, split: str, number: int, conversations: list[Conversation], timings: dict) -> dict[str, Any]:
    path = shard_path(root, split, number)
    t0 = time.perf_counter()
    write_shard(path, conversations)
    timings["write"] = timings.get("write", 0.0) + time.perf_counter() - t0
    return {"path": str(path.relative_to(root)), "split": split, "conversations": len(conversations),
            "seconds": float(sum(c.duration for c in conversations)), "bytes": path.stat().st_size}


def _manifest_settings(settings: SynthSettings) -> dict[str, Any]:
    from dystream import __version__

    # through JSON, so a tuple compares equal to the list read back when resuming
    return json.loads(json.dumps({"schema_version": SCHEMA_VERSION, "dystream_version": __version__,
                                  **asdict(settings)}))


def _open_manifest(root: Path, settings: SynthSettings, voices: dict[str, list[str]]) -> dict[str, Any]:
    path = root / MANIFEST
    wanted = _manifest_settings(settings)
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{path} is unreadable ({exc}); remove it or choose another output folder") from None
        old = existing.get("settings", {})
        diff = [k for k in wanted if k != "dystream_version" and old.get(k) != wanted[k]]
        if diff:
            details = ", ".join(f"{k}: {old.get(k)!r} there, {wanted[k]!r} now" for k in diff)
            raise InputError(f"{root} already holds a dataset made with other settings ({details}); "
                             "use the same settings to resume, or another output folder")
        return existing
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"settings": wanted, "voices": voices, "status": "incomplete", "shards": []}
    _write_json(path, manifest)
    return manifest


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def synthesize_dataset(root: str | Path, settings: SynthSettings, *, workers: int = 1,
                       progress: bool = True) -> dict[str, Any]:
    """Generate (or finish) the dataset in ``root``; returns the manifest."""
    from dystream.data import voices as voice_table

    settings.validate()
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    root = Path(root)
    voices = voice_table.voices_by_split(settings.engines, settings.exclude_voices,
                                         settings.add_train_voices)
    planned = plan(settings)
    voice_table.check_split_voices(voices, {split: float(len(convs)) for split, convs in planned.items()})
    # only the engines whose voices this dataset speaks need to be installed
    voice_table.check_engines(sorted({v for split, pool in voices.items() if planned[split] for v in pool}))
    manifest = _open_manifest(root, settings, voices)

    shards = shard_plan(settings)
    todo = [(split, number, convs) for split, number, convs in shards
            if not shard_path(root, split, number).exists()]
    # Two ways to share the work, same output: with enough shards, each worker makes and
    # writes whole shards (no audio crosses processes); with few, workers make single
    # conversations in plan order and this process writes each shard when it is whole.
    whole_shards = workers > 1 and len(todo) >= 2 * workers
    started = time.perf_counter()
    results = []
    timings: dict[str, float] = {}
    if todo:
        from tqdm import tqdm

        bar = tqdm(total=sum(c.target_seconds for _, _, convs in todo for c in convs) / 3600,
                   unit="h", disable=not progress, desc="synth",
                   bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} h [{elapsed}<{remaining}]")
        pool = None
        if workers > 1:
            import multiprocessing

            pool = multiprocessing.get_context("fork").Pool(workers)
        try:
            if whole_shards:
                assert pool is not None
                shard_tasks = [(root, split, number, convs, settings, voices) for split, number, convs in todo]
                for result, shard_timings in pool.imap_unordered(_make_shard, shard_tasks):
                    for key, value in shard_timings.items():
                        timings[key] = timings.get(key, 0.0) + value
                    results.append(result)
                    bar.update(result["target_seconds"] / 3600)
            else:
                tasks = [(c, settings, voices) for _, _, convs in todo for c in convs]
                made = pool.imap(_make_conversation, tasks) if pool is not None else map(_make_conversation, tasks)
                for split, number, convs in todo:
                    batch = []
                    for _ in convs:
                        conversation, conv_timings = next(made)
                        for key, value in conv_timings.items():
                            timings[key] = timings.get(key, 0.0) + value
                        batch.append(conversation)
                        bar.update(conversation.extra["target_seconds"] / 3600)
                    results.append(_write(root, split, number, batch, timings))
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        bar.close()
    wall = time.perf_counter() - started

    # the manifest lists every shard of the plan (all exist now), in order
    from dystream.data.schema import read_shard_meta

    listed = []
    for split, number, convs in shards:
        path = shard_path(root, split, number)
        meta = read_shard_meta(path)
        listed.append({"path": str(path.relative_to(root)), "split": split,
                       "conversations": len(meta["conversations"]),
                       "seconds": round(sum(c["duration"] for c in meta["conversations"]), 3),
                       "bytes": path.stat().st_size})
    manifest.update({
        "status": "complete", "shards": listed,
        "hours": {s: round(sum(x["seconds"] for x in listed if x["split"] == s) / 3600, 4) for s in SPLITS},
        "last_run": {"workers": workers, "shards_written": len(results), "wall_seconds": round(wall, 2),
                     "hours_written": round(sum(r["seconds"] for r in results) / 3600, 4),
                     "stage_seconds": {k: round(v, 2) for k, v in timings.items()}},
    })
    _write_json(root / MANIFEST, manifest)
    return manifest
