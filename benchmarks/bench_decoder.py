"""Mesh autoencoder speed: encode of the bundled photo, decode fps at 256 and 512.

    python benchmarks/bench_decoder.py [--frames 500] [--device cpu] [--batch 1] [--photos 1]

Decode runs frame by frame at batch 1 by default (the streaming case), with the
mouth interior and the paste-back into the full photo included. Motion is a
random walk inside the supported range, so the mouth opens and closes.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from dystream.autoencoder import load_autoencoder
from dystream.autoencoder.mesh.calibration import random_motions
from dystream.video import bundled_photo


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(resolution: int, frames: int, device: str, batch: int, photos: int, paste_back: bool) -> dict:
    dev = torch.device(device)
    ae = load_autoencoder("mesh", resolution=resolution, device=dev)
    photo = bundled_photo()
    start = time.perf_counter()
    ae.encode(photo)
    first_s = time.perf_counter() - start          # includes loading the landmarker
    start = time.perf_counter()
    appearance, m0 = ae.encode(photo)
    encode_s = time.perf_counter() - start
    ae.encoder.close()  # mediapipe's worker threads would compete for the two cores
    rng = np.random.default_rng(0)
    motion = torch.from_numpy(random_motions(m0, frames, rng)).to(dev)
    apps = [appearance] * photos
    steps = range(0, frames, batch)

    def run_once(t0: int) -> None:
        chunk = motion[t0:t0 + batch]
        if photos == 1:
            ae.decode(appearance, chunk, paste_back=paste_back)
        else:
            ae.decode(apps, chunk[None].expand(photos, -1, -1), paste_back=paste_back)

    for t0 in list(steps)[:5]:
        run_once(t0)
    _sync(dev)
    start = time.perf_counter()
    for t0 in steps:
        run_once(t0)
    _sync(dev)
    elapsed = time.perf_counter() - start
    return {"resolution": resolution, "first_encode_s": first_s, "encode_s": encode_s, "fps": frames * photos / elapsed,
            "ms_per_step": 1000 * elapsed / len(steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1, help="frames per decode call")
    parser.add_argument("--photos", type=int, default=1, help="different sessions decoded together")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--no-paste-back", action="store_true")
    args = parser.parse_args()
    machine = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"mesh autoencoder on {args.device} ({machine}); {args.frames} frames, batch {args.batch}, "
          f"photos {args.photos}, paste-back {'off' if args.no_paste_back else 'on'}")
    print(f"{'resolution':>10} {'1st encode s':>12} {'encode s':>9} {'decode fps':>11} {'ms/call':>8}")
    for resolution in args.resolutions:
        r = bench(resolution, args.frames, args.device, args.batch, args.photos, not args.no_paste_back)
        print(f"{r['resolution']:>10} {r['first_encode_s']:>12.3f} {r['encode_s']:>9.3f} {r['fps']:>11.1f} "
              f"{r['ms_per_step']:>8.2f}")


if __name__ == "__main__":
    main()
