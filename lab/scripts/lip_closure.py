"""Lip closure of generator weights, per voice: a quick look at bilabial closure.

    python benchmarks/lip_closure.py --data DIR [--splits val test] [--seconds 60]
        [--seeds 0 1] [--steps 5] [--guidance JSON] [--device cuda] [--json out.json] [WEIGHTS ...]

Generates motion for the first ``--seconds`` of every conversation of each split
(both parties; default steps and guidance unless given) with each weights file (none: the bundled
weights) and prints, per split and seed: the bilabial closure rate
(``dystream.metrics.events.bilabial_closure_counts``) over all voices and per voice,
the share of vowels with a closed-lip frame and of speaking frames with closed lips
(model and ground truth: is closure raised everywhere or where it belongs?), and the
jawOpen correlation and mean while speaking. Much quicker than `dystream evaluate`
(which scores whole conversations and every metric) and split by voice, which is
where the lip-closure miss lives (docs/generator.md).
"""

from __future__ import annotations

import argparse
import collections
import json

import numpy as np

VOWELS = frozenset("aa ae ah ao aw ax ay eh er ey ih iy ow oy uh uw".split())


def vowel_closures(motion: np.ndarray, phones) -> tuple[int, int]:
    """(vowels with a frame of closed lips, vowels) of one party."""
    from dystream.metrics import events

    return events.phone_closure_counts(motion, phones, VOWELS)


def score(predictions, meta, seconds: float) -> dict:
    from dystream.metrics import events
    from dystream.motion import idx

    per_voice = collections.defaultdict(lambda: np.zeros(5))
    jaw, jaw_gt, shut, shut_gt = [], [], [], []
    for (conv, party), motion in zip(meta, predictions):
        phones = [p for p in conv.labels[party].phones if p[2] < seconds]
        truth = conv.motion[party][:len(motion)]
        closed, total = events.bilabial_closure_counts(motion, phones)
        vowels_closed, vowels = vowel_closures(motion, phones)
        vowels_closed_gt, _ = vowel_closures(truth, phones)
        speaking = conv.speaking(party)[:len(motion)]
        jaw.append(motion[speaking, idx("jawOpen")])
        jaw_gt.append(truth[speaking, idx("jawOpen")])
        shut.append(events.lip_aperture(motion)[speaking] < events.CLOSED_APERTURE)
        shut_gt.append(events.lip_aperture(truth)[speaking] < events.CLOSED_APERTURE)
        per_voice[conv.voices[party]] += [closed, total, vowels_closed, vowels, vowels_closed_gt]
    sums = sum(per_voice.values())
    jaw, jaw_gt = np.concatenate(jaw), np.concatenate(jaw_gt)
    return {
        "bilabial": sums[0] / max(sums[1], 1), "bilabials": int(sums[1]),
        "vowel_closed": sums[2] / max(sums[3], 1), "vowel_closed_gt": sums[4] / max(sums[3], 1),
        "closed_frames": float(np.concatenate(shut).mean()), "closed_frames_gt": float(np.concatenate(shut_gt).mean()),
        "jaw_r": float(np.corrcoef(jaw, jaw_gt)[0, 1]), "jaw_mean": float(jaw.mean()), "jaw_mean_gt": float(jaw_gt.mean()),
        "per_voice": {voice: r[0] / max(r[1], 1) for voice, r in sorted(per_voice.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="*", help="exported generator weights (default: the bundled ones)")
    parser.add_argument("--data", required=True, help="dataset directory made by `dystream data synth`")
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds scored from each conversation's start")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=5, help="flow sampler steps per frame (default 5)")
    parser.add_argument("--guidance", help="guidance weights, a JSON dict as for `dystream generate --guidance`")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64, help="streams generated together")
    parser.add_argument("--json", help="write every score to this file")
    args = parser.parse_args()

    from dystream.data.schema import iter_conversations
    from dystream.evaluation.core import neutral_frame
    from dystream.generator.guidance import command_line_guidance
    from dystream.generator.inference import generate_motion_batch
    from dystream.generator.weights import load_generator

    guidance, pose_guidance = command_line_guidance(args.guidance, None)
    samples = int(25 * args.seconds) * 640
    results = {}
    for split in args.splits:
        convs = list(iter_conversations(args.data, split))
        items, meta = [], []
        for conv in convs:
            for party in (0, 1):
                items.append((conv.audio[party][:samples], conv.audio[1 - party][:samples], neutral_frame(conv, party)))
                meta.append((conv, party))
        for weights in args.weights or [None]:
            model = load_generator(weights, args.device)
            name = weights or "bundled"
            for seed in args.seeds:
                predictions = generate_motion_batch(model, [(*item, seed) for item in items], steps=args.steps,
                                                    guidance=guidance, pose_guidance=pose_guidance,
                                                    device=args.device, batch_size=args.batch_size)
                row = score(predictions, meta, args.seconds)
                results[f"{name}|{split}|{seed}"] = row
                voices = "  ".join(f"{v} {r:.2f}" for v, r in row["per_voice"].items())
                print(f"{split} seed {seed} {name}: bilabial {row['bilabial']:.3f} ({voices}); vowels closed "
                      f"{row['vowel_closed']:.3f} (GT {row['vowel_closed_gt']:.3f}); closed frames "
                      f"{row['closed_frames']:.3f} (GT {row['closed_frames_gt']:.3f}); jaw r {row['jaw_r']:.3f}, "
                      f"mean {row['jaw_mean']:.3f} (GT {row['jaw_mean_gt']:.3f})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
