"""Where bilabial closures are lost: per minute of conversation and per track's recording channel.

    python benchmarks/closure_breakdown.py --data DIR [--split test] [--seed 0] [--weights W]
        [--device cpu] [--json out.json]

Generates motion for whole conversations of a split (both parties, default steps and
guidance; the bundled weights unless ``--weights``) and prints the bilabial closure rate
(``dystream.metrics.events.bilabial_closure_counts``) per minute of conversation (all
voices and per voice: does closure fade over a long stream?) and per track with the
recording channel the data engine put on it (``augmentation`` in the shard: level,
noise floor SNR, room, band limit: which channel costs a voice its closures?).
About 6 minutes for the 1.24 h test split on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import ast
import collections
import json

import numpy as np


def channel_of(conv, party: int) -> dict:
    """The recording channel the data engine put on a party's track (empty if unrecorded)."""
    channel = conv.extra.get("augmentation")
    if not channel:
        return {}
    return dict((ast.literal_eval(channel) if isinstance(channel, str) else channel)[party])


def breakdown(meta, motions) -> tuple[dict, list]:
    """({(minute, voice or "all"): [closed, bilabials]}, one record per track) for
    (conversation, party) pairs and their generated motions; a bilabial belongs to the
    minute in which it starts."""
    from dystream.metrics import events

    minutes = collections.defaultdict(lambda: np.zeros(2, dtype=int))
    tracks = []
    for (conv, party), motion in zip(meta, motions):
        voice = conv.voices[party]
        by_minute = collections.defaultdict(list)
        for phone in conv.labels[party].phones:
            by_minute[int(float(phone[1]) // 60)].append(phone)
        track = np.zeros(2, dtype=int)
        for minute, phones in by_minute.items():
            counts = np.array(events.bilabial_closure_counts(motion, phones))
            minutes[(minute, voice)] += counts
            minutes[(minute, "all")] += counts
            track += counts
        tracks.append({"conversation": conv.id, "party": party, "voice": voice, **channel_of(conv, party),
                       "bilabials": int(track[1]), "closed": int(track[0])})
    return dict(minutes), tracks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset directory made by `dystream data synth`")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="exported generator weights (default: the bundled ones)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write the breakdown to this file")
    args = parser.parse_args()

    from dystream.data.schema import iter_conversations
    from dystream.evaluation.core import neutral_frame
    from dystream.generator.inference import generate_motion_batch
    from dystream.generator.weights import load_generator

    convs = list(iter_conversations(args.data, args.split))
    items, meta = [], []
    for conv in convs:
        for party in (0, 1):
            items.append((conv.audio[party], conv.audio[1 - party], neutral_frame(conv, party), args.seed))
            meta.append((conv, party))
    model = load_generator(args.weights, args.device)
    motions = generate_motion_batch(model, items, device=args.device)

    minutes, tracks = breakdown(meta, motions)

    print("minute  voice                      bilabials  closed")
    for (minute, voice), (closed, total) in sorted(minutes.items()):
        if total:
            print(f"{minute:>6}  {voice:<26} {total:>9}  {closed / total:.3f}")
    print("\nvoice                      SNR dB  level dB  room mix  band (Hz)        bilabials  closed")
    for t in sorted(tracks, key=lambda t: (t["voice"], t.get("snr_db", 0))):
        band = f"{t.get('low_hz', 0):.0f}-{t.get('high_hz', 0):.0f}" if t.get("high_hz") else "full"
        rate = f"{t['closed'] / t['bilabials']:.3f}" if t["bilabials"] else "-"
        print(f"{t['voice']:<26} {t.get('snr_db', float('nan')):>6.1f}  {t.get('gain_db', float('nan')):>8.1f}  "
              f"{t.get('reverb_mix', float('nan')):>8.2f}  {band:<15}  {t['bilabials']:>9}  {rate}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"weights": args.weights or "bundled", "split": args.split, "seed": args.seed,
                       "by_minute": {f"{m}|{v}": {"bilabials": int(c[1]), "closed": int(c[0])}
                                     for (m, v), c in sorted(minutes.items())},
                       "tracks": tracks}, f, indent=1)


if __name__ == "__main__":
    main()
