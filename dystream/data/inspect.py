"""Statistics of a dataset folder and a picture of one conversation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dystream.config import FRAMES_PER_SECOND, SAMPLE_RATE
from dystream.data.schema import SPLITS, Conversation, read_shard, read_shard_meta, shard_paths
from dystream.errors import InputError


def _check_dataset(root: Path) -> None:
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    if not any((root / s).is_dir() for s in SPLITS):
        raise InputError(f"{root} holds no split folders ({', '.join(SPLITS)}); make one with `dystream data synth`")


def dataset_statistics(root: str | Path) -> dict[str, Any]:
    """Per split: hours, conversations, voices, lengths, speaking share, event rates, bytes per hour."""
    root = Path(root)
    _check_dataset(root)
    stats: dict[str, Any] = {"splits": {}}
    manifest = root / "manifest.json"
    if manifest.exists():
        stats["status"] = json.loads(manifest.read_text()).get("status")
    for split in SPLITS:
        paths = shard_paths(root, split) if (root / split).is_dir() else []
        durations, voices, speaking, nods, blinks, backchannels, words = [], set(), [], 0, 0, 0, 0
        size = sum(p.stat().st_size for p in paths)
        for path in paths:
            for conv in read_shard_meta(path)["conversations"]:
                durations.append(conv["duration"])
                voices.update(conv["voices"])
                for lab in conv["labels"]:
                    talk = sum(e - s for s, e in lab["phrases"]) + sum(e - s for s, e in lab["backchannels"])
                    speaking.append(talk / max(conv["duration"], 1e-9))
                    nods += len(lab["nods"])
                    blinks += len(lab["blinks"])
                    backchannels += len(lab["backchannels"])
                    words += len(lab["words"])
        # events per minute per person (two people per conversation)
        person_minutes = 2 * sum(durations) / 60.0
        hours = sum(durations) / 3600.0
        stats["splits"][split] = {
            "shards": len(paths), "conversations": len(durations), "hours": hours,
            "voices": sorted(voices),
            "seconds_min": float(np.min(durations)) if durations else 0.0,
            "seconds_median": float(np.median(durations)) if durations else 0.0,
            "seconds_max": float(np.max(durations)) if durations else 0.0,
            "long_conversations": int(sum(d >= 300 for d in durations)),
            "speaking_fraction": float(np.mean(speaking)) if speaking else 0.0,
            "nods_per_minute": nods / person_minutes if person_minutes else 0.0,
            "blinks_per_minute": blinks / person_minutes if person_minutes else 0.0,
            "backchannels_per_minute": backchannels / person_minutes if person_minutes else 0.0,
            "words_per_minute_speaking": 0.0,
            "megabytes": size / 1e6,
            "megabytes_per_hour": size / 1e6 / hours if hours else 0.0,
        }
        talk_minutes = sum(speaking) and sum(s * d for s, d in zip(speaking, np.repeat(durations, 2))) / 60.0
        if talk_minutes:
            stats["splits"][split]["words_per_minute_speaking"] = words / talk_minutes
    return stats


def format_statistics(stats: dict[str, Any]) -> str:
    lines = []
    if stats.get("status"):
        lines.append(f"status: {stats['status']}")
    header = (f"{'split':<6} {'hours':>7} {'convs':>6} {'len min/med/max s':>19} {'long':>5} {'speak':>6} "
              f"{'nod/min':>8} {'blink/min':>9} {'bc/min':>7} {'wpm':>5} {'MB/hour':>8}")
    lines.append(header)
    for split, s in stats["splits"].items():
        lines.append(
            f"{split:<6} {s['hours']:>7.3f} {s['conversations']:>6} "
            f"{s['seconds_min']:>6.0f}/{s['seconds_median']:>5.0f}/{s['seconds_max']:>5.0f}  "
            f"{s['long_conversations']:>5} {s['speaking_fraction']:>6.2f} {s['nods_per_minute']:>8.2f} "
            f"{s['blinks_per_minute']:>9.2f} {s['backchannels_per_minute']:>7.2f} "
            f"{s['words_per_minute_speaking']:>5.0f} {s['megabytes_per_hour']:>8.1f}")
    for split, s in stats["splits"].items():
        lines.append(f"voices {split}: {', '.join(s['voices']) or '-'}")
    return "\n".join(lines)


def _find_conversation(root: Path, conversation_id: str | None) -> Conversation:
    for split in ("val", "train", "test"):
        if not (root / split).is_dir():
            continue
        for path in shard_paths(root, split):
            for conv in read_shard(path):
                if conversation_id is None or conv.id == conversation_id:
                    return conv
    raise InputError(f"no conversation {conversation_id!r} in {root}" if conversation_id
                     else f"{root} holds no conversations")


def plot_example(root: str | Path, output: str | Path, *, conversation_id: str | None = None,
                 seconds: float = 12.0, start: float | None = None) -> Path:
    """PNG of an excerpt: waveforms with phones, speaking state and key motion curves of both parties."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dystream.motion import idx

    root = Path(root)
    _check_dataset(root)
    conv = _find_conversation(root, conversation_id)
    if start is None:
        # start where both have spoken recently: just before the second phrase of the conversation
        firsts = sorted(p[0] for lab in conv.labels for p in lab.phrases)
        start = max(firsts[1] - 2.0, 0.0) if len(firsts) > 1 else 0.0
    end = min(start + seconds, conv.duration)
    a, b = int(start * SAMPLE_RATE), int(end * SAMPLE_RATE)
    fa, fb = int(start * FRAMES_PER_SECOND), int(end * FRAMES_PER_SECOND)
    t_audio = np.arange(a, b) / SAMPLE_RATE
    t_frames = np.arange(fa, min(fb, conv.num_frames)) / FRAMES_PER_SECOND
    speaking = [conv.speaking(p) for p in range(2)]
    colours = ["tab:blue", "tab:orange"]

    curves = [("jawOpen", "jawOpen"), ("mouthClose", "mouthClose"), ("mouthPucker", "mouthPucker"),
              ("eyeBlinkLeft", "eyeBlink"), ("pitch", "pitch (rad)"), ("yaw", "yaw (rad)")]
    fig, axes = plt.subplots(3 + len(curves), 1, figsize=(16, 2.0 * (3 + len(curves))), sharex=True)
    for p in range(2):
        ax = axes[p]
        ax.plot(t_audio, conv.audio[p, a:b], color=colours[p], linewidth=0.4)
        ax.set_ylabel(f"{'AB'[p]}: {conv.voices[p]}", fontsize=8)
        top = float(np.max(np.abs(conv.audio[p, a:b])) or 1.0)
        ax.set_ylim(-top * 1.3, top * 1.3)
        for phone, s, e in conv.labels[p].phones:
            if e < start or s > end or phone == "pau":
                continue
            ax.axvline(s, color="grey", linewidth=0.2)
            ax.text((s + e) / 2, top * 1.05, phone, fontsize=5, ha="center")
        for word, s, e in conv.labels[p].words:
            if start <= s <= end:
                ax.text((s + e) / 2, -top * 1.25, word, fontsize=6, ha="center", color="darkgreen")
        for s, e in conv.labels[p].backchannels:
            if e >= start and s <= end:
                ax.axvspan(s, e, color="gold", alpha=0.4)
    ax = axes[2]
    for p in range(2):
        ax.step(t_frames, speaking[p][fa:fa + len(t_frames)] * (1.0 + 0.05 * p), where="post",
                color=colours[p], label=f"{'AB'[p]} speaking")
        for t, amp in conv.labels[p].nods:
            if start <= t <= end:
                ax.plot(t, 0.5, "v", color=colours[p], markersize=6)
        for t in conv.labels[p].blinks:
            if start <= t <= end:
                ax.plot(t, 0.25, "|", color=colours[p], markersize=10)
    ax.set_ylabel("speaking\n(v nod, | blink)", fontsize=8)
    ax.legend(loc="upper right", fontsize=7)
    for ax, (name, label) in zip(axes[3:], curves):
        for p in range(2):
            ax.plot(t_frames, conv.motion[p, fa:fa + len(t_frames), idx(name)], color=colours[p])
        ax.set_ylabel(label, fontsize=8)
    axes[-1].set_xlabel(f"seconds in {conv.id} ({conv.split})")
    fig.suptitle(f"{conv.id}: {conv.voices[0]} (A, blue) and {conv.voices[1]} (B, orange)", fontsize=10)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
