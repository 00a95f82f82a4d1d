"""Mesh autoencoder speed: encode of the bundled photo, decode fps at 256 and 512.

    python benchmarks/bench_decoder.py [--frames 500] [--device cpu] [--batch 1] [--photos 1]
    python benchmarks/bench_decoder.py --save-appearance app.pt          # needs the face engine
    python benchmarks/bench_decoder.py --appearance app.pt --device cuda --batches 1 8 32 128

Default: decode frame by frame at batch 1 (the streaming case), with the mouth
interior and the paste-back into the full photo included. Motion is random inside
the supported range, so the mouth opens and closes.

``--save-appearance`` encodes the bundled photo at every resolution asked and writes
the appearances to one file; ``--appearance`` reads such a file instead of encoding,
so the decoder can be timed on a machine without MediaPipe (a GPU box). With
``--batches`` the table is throughput per batch size: each call decodes ``batch``
frames of one photo, timed with the device synchronised, median over ``--repeats``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from dystream.autoencoder import load_autoencoder
from dystream.autoencoder.mesh.calibration import random_motions
from dystream.autoencoder.mesh.decoder import MeshAppearance


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bundled_photo() -> np.ndarray:
    from dystream.video import bundled_photo

    return bundled_photo()


def save_appearances(path: str, resolutions: list[int]) -> None:
    """Encode the bundled photo at each resolution; one file {resolution: state}."""
    states = {}
    for resolution in resolutions:
        ae = load_autoencoder("mesh", resolution=resolution)
        appearance, _ = ae.encode(_bundled_photo())
        ae.encoder.close()
        states[resolution] = appearance.state_dict()
    torch.save(states, path)
    print(f"wrote appearances at {', '.join(map(str, resolutions))} px to {path}")


def load_appearance(path: str, resolution: int, device: torch.device) -> MeshAppearance:
    states = torch.load(path, map_location="cpu", weights_only=True)
    if resolution not in states:
        raise SystemExit(f"{path} holds appearances at {sorted(states)} px, not {resolution}; "
                         f"remake it with --save-appearance {path} --resolutions {resolution}")
    return MeshAppearance.from_state_dict(states[resolution], device=device)


def bench(resolution: int, frames: int, device: str, batch: int, photos: int, paste_back: bool) -> dict:
    """Streaming-style run: ``frames`` frames, ``batch`` per call, encode timed too."""
    dev = torch.device(device)
    ae = load_autoencoder("mesh", resolution=resolution, device=dev)
    photo = _bundled_photo()
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


def bench_batches(resolution: int, device: str, batches: list[int], repeats: int, paste_back: bool,
                  appearance_file: str | None) -> list[dict]:
    """Throughput per batch size: median seconds of one synchronised ``batch``-frame decode."""
    dev = torch.device(device)
    ae = load_autoencoder("mesh", resolution=resolution, device=dev)
    if appearance_file:
        appearance = load_appearance(appearance_file, resolution, dev)
    else:
        appearance, _ = ae.encode(_bundled_photo())
        ae.encoder.close()
    rows = []
    for batch in batches:
        motion = torch.from_numpy(random_motions(appearance.m0, batch * (repeats + 2),
                                                 np.random.default_rng(batch))).to(dev)
        calls = [motion[i * batch:(i + 1) * batch] for i in range(repeats + 2)]
        for chunk in calls[:2]:                      # warm-up: allocator, kernels, cuDNN choices
            ae.decode(appearance, chunk, paste_back=paste_back)
        _sync(dev)
        times = []
        for chunk in calls[2:]:
            start = time.perf_counter()
            ae.decode(appearance, chunk, paste_back=paste_back)
            _sync(dev)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        rows.append({"resolution": resolution, "batch": batch, "ms_per_call": 1000 * median,
                     "fps": batch / median, "min_ms": 1000 * min(times)})
        del motion, calls
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1, help="frames per decode call")
    parser.add_argument("--photos", type=int, default=1, help="different sessions decoded together")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--no-paste-back", action="store_true")
    parser.add_argument("--batches", type=int, nargs="+", help="throughput table over these batch sizes")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per batch size (median)")
    parser.add_argument("--appearance", help="file from --save-appearance: decode without the face engine")
    parser.add_argument("--save-appearance", metavar="FILE", help="encode the bundled photo, save, exit")
    args = parser.parse_args()
    if args.save_appearance:
        save_appearances(args.save_appearance, args.resolutions)
        return
    on_cuda = args.device.startswith("cuda")
    machine = torch.cuda.get_device_name(torch.device(args.device)) if on_cuda else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    paste = "off" if args.no_paste_back else "on"
    if args.batches or args.appearance:
        batches = args.batches or [1, 8, 32, 128]
        print(f"mesh decoder on {args.device} ({machine}); torch {torch.__version__}; paste-back {paste}; "
              f"median of {args.repeats} synchronised calls")
        print(f"{'resolution':>10} {'batch':>6} {'ms/call':>9} {'min ms':>8} {'frames/s':>9}")
        for resolution in args.resolutions:
            for r in bench_batches(resolution, args.device, batches, args.repeats, not args.no_paste_back,
                                   args.appearance):
                print(f"{r['resolution']:>10} {r['batch']:>6} {r['ms_per_call']:>9.2f} {r['min_ms']:>8.2f} "
                      f"{r['fps']:>9.1f}", flush=True)
        return
    print(f"mesh autoencoder on {args.device} ({machine}); {args.frames} frames, batch {args.batch}, "
          f"photos {args.photos}, paste-back {paste}")
    print(f"{'resolution':>10} {'1st encode s':>12} {'encode s':>9} {'decode fps':>11} {'ms/call':>8}")
    for resolution in args.resolutions:
        r = bench(resolution, args.frames, args.device, args.batch, args.photos, not args.no_paste_back)
        print(f"{r['resolution']:>10} {r['first_encode_s']:>12.3f} {r['encode_s']:>9.3f} {r['fps']:>11.1f} "
              f"{r['ms_per_step']:>8.2f}")


if __name__ == "__main__":
    main()
