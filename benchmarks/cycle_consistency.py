"""Cycle consistency of the mesh autoencoder through pixels: decode, re-encode, compare.

    python benchmarks/cycle_consistency.py [--photo P] [--random 500] [--data DIR --split test]

Reports the mean absolute error of every channel (angles in degrees) over
one-channel sweeps from the photo's m0 and over many motions: random ones within
the supported range, or frames drawn from a dataset's split (both parties).
Targets (issue 3): <= 0.15 for mouth and eye coefficients, <= 3 degrees per angle.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from dystream.autoencoder import load_autoencoder
from dystream.autoencoder.mesh.calibration import (ANGLE_CHANNELS, CALIBRATED_CHANNELS, MOUTH_EYE_CHANNELS,
                                                   coupling_table, evaluate, fit_coupling, passes, save_gains)
from dystream.autoencoder.mesh.decoder import CALIBRATION_FILE
from dystream.motion import INDEX, LOWER, NUM_EXPRESSION, UPPER
from dystream.video import bundled_photo, read_image


def dataset_motions(root: str, split: str, count: int, m0: np.ndarray, seed: int = 0,
                    retarget: bool = True) -> np.ndarray:
    """``count`` frames drawn from a split's motion, pose re-centred on the photo's own.

    With ``retarget`` the expression is moved onto the photo as the demo does it
    (dystream.pipeline.retarget): anchor = m0 clipped to the split's mean +/- 3 std,
    rendered = m0 + (motion - anchor). Without it the split's expression is asked for
    as is, which for a photo far outside the data (the astronaut's broad smile) means
    taking its own expression away first."""
    from dystream.data.schema import iter_conversations

    frames = [conv.motion.reshape(-1, conv.motion.shape[-1]) for conv in
              iter_conversations(root, split, with_audio=False)]
    if not frames:
        raise SystemExit(f"no conversations in {root}/{split}")
    pool = np.concatenate(frames)
    rng = np.random.default_rng(seed)
    picked = pool[rng.choice(len(pool), size=min(count, len(pool)), replace=False)].copy()
    # The dataset's head pose is absolute around a frontal face; render it around the photo's.
    for name in ("pitch", "yaw", "roll", "tx", "ty", "log_scale"):
        k = INDEX[name]
        picked[:, k] += m0[k] - np.median(pool[:, k])
    if retarget:
        from dystream.pipeline.retarget import to_photo

        expression = slice(0, NUM_EXPRESSION)
        mean, std = pool[:, expression].mean(axis=0), pool[:, expression].std(axis=0)
        anchor = m0.astype(np.float32).copy()
        anchor[expression] = np.clip(m0[expression], mean - 3 * std, mean + 3 * std)
        anchor[NUM_EXPRESSION:] = m0[NUM_EXPRESSION:]       # pose was re-centred above
        picked = to_photo(picked, anchor, m0)
    return np.clip(picked, LOWER, UPPER).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", help="photo to animate (default: the bundled astronaut)")
    parser.add_argument("--resolution", type=int, default=256, choices=(256, 512))
    parser.add_argument("--random", type=int, default=500, help="number of random motions")
    parser.add_argument("--data", help="dataset directory: use its motion instead of random motion")
    parser.add_argument("--split", default="test")
    parser.add_argument("--as-is", action="store_true",
                        help="ask for the split's expression as is (no retargeting onto the photo's own m0)")
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument("--fit-coupling", metavar="SPLIT",
                        help="first fit the cross-talk coupling on this split of --data (e.g. val; not the split "
                             "evaluated) and write it into the calibration file")
    args = parser.parse_args()
    ae = load_autoencoder("mesh", resolution=args.resolution)
    appearance, m0 = ae.encode(read_image(args.photo) if args.photo else bundled_photo())
    if args.fit_coupling:
        if not args.data:
            raise SystemExit("--fit-coupling needs --data DIR")
        fit_on = dataset_motions(args.data, args.fit_coupling, args.random, m0, seed=1, retarget=not args.as_is)
        coupling = fit_coupling(ae, appearance, m0, fit_on)
        table = json.loads(CALIBRATION_FILE.read_text())
        save_gains(table["gains"], CALIBRATION_FILE, table["note"], coupling_table(coupling))
        print(f"wrote the coupling fitted on {len(fit_on)} frames of {args.fit_coupling} to {CALIBRATION_FILE}")
    motions = dataset_motions(args.data, args.split, args.random, m0, retarget=not args.as_is) if args.data else None
    start = time.perf_counter()
    report = evaluate(ae, appearance, m0, random_count=args.random, motions=motions)
    elapsed = time.perf_counter() - start
    ae.encoder.close()
    many = ("as-is" if args.as_is else "retarget") if args.data else "random"
    print(f"cycle consistency at {args.resolution} px, {len(motions) if motions is not None else args.random} "
          f"{many} motions + 5-step sweeps "
          f"({elapsed:.0f} s); faces read: {report['random']['faces_read']:.0%}")
    print(f"{'channel':<20} {'sweep':>7} {many:>8}  target")
    for name in CALIBRATED_CHANNELS:
        target = "3 deg" if name in ANGLE_CHANNELS else ("0.15" if name in MOUTH_EYE_CHANNELS else "-")
        print(f"{name:<20} {report['sweep'][name]:>7.3f} {report['random'][name]:>8.3f}  {target}")
    for name in ("tx", "ty", "log_scale"):
        print(f"{name:<20} {'':>7} {report['random'][name]:>8.3f}")
    print("meets targets:", passes(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
