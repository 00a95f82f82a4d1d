"""Mesh autoencoder speed: encode of the bundled photo, decode fps at 256 and 512.

    python benchmarks/bench_decoder.py [--frames 500] [--device cpu] [--batch 1] [--photos 1]
    python benchmarks/bench_decoder.py --save-appearance app.pt [--photos 4]   # needs the face engine
    python benchmarks/bench_decoder.py --appearance app.pt --device cuda --batches 1 8 32 128
    python benchmarks/bench_decoder.py --appearance app.pt --device cuda --photos 4 --batches 1 8 32 [--loop]

Default: decode frame by frame at batch 1 (the streaming case), with the mouth
interior and the paste-back into the full photo included. Motion is random inside
the supported range, so the mouth opens and closes.

``--save-appearance`` encodes the bundled photo (with ``--photos K``: K variants of
it, mirrored, shifted and rescaled, see :func:`photo_variants`) at every resolution
asked and writes the appearances to one file; ``--appearance`` reads such a file
instead of encoding, so the decoder can be timed on a machine without MediaPipe (a
GPU box). With ``--batches`` the table is throughput per batch size: each call
decodes ``batch`` frames of one photo, or with ``--photos K`` ``batch`` frames of
each of K different photos in one batched render (frames/s = K * batch / median;
the photos are stacked once before timing, as a streaming engine would keep them;
a file with fewer photos than K is cycled). ``--loop`` also times the same frames
decoded photo by photo (the path taken before the batched render). Timed with the
device synchronised, median over ``--repeats``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dystream.autoencoder import load_autoencoder
from dystream.autoencoder.mesh.calibration import random_motions
from dystream.autoencoder.mesh.decoder import AppearanceBatch, MeshAppearance


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bundled_photo() -> np.ndarray:
    from dystream.video import bundled_photo

    return bundled_photo()


def photo_variants(count: int) -> list[np.ndarray]:
    """``count`` different photos from the bundled one (512 x 512): as is, mirrored, the
    face shrunk and moved, the face enlarged and moved, then the mirrored shrunk and
    enlarged ones (8 distinct; more repeat them). Each keeps the whole face in view."""
    from PIL import Image

    photo = _bundled_photo()

    def shrunk(image: np.ndarray, side: int, top: int, left: int) -> np.ndarray:
        small = np.array(Image.fromarray(image).resize((side, side), Image.BILINEAR))
        pad = ((top, 512 - side - top), (left, 512 - side - left), (0, 0))
        return np.pad(small, pad, mode="edge")

    def enlarged(image: np.ndarray, side: int, top: int, left: int) -> np.ndarray:
        part = image[top:top + side, left:left + side]
        return np.array(Image.fromarray(part).resize((512, 512), Image.BILINEAR))

    mirrored = np.ascontiguousarray(photo[:, ::-1])
    variants = [photo, mirrored, shrunk(photo, 400, 80, 30), enlarged(photo, 440, 40, 60),
                shrunk(mirrored, 360, 20, 120), enlarged(mirrored, 460, 10, 30)]
    variants += [shrunk(photo, 440, 0, 72), enlarged(photo, 420, 80, 10)]
    return [variants[i % len(variants)] for i in range(count)]


def save_appearances(path: str, resolutions: list[int], photos: int = 1) -> None:
    """Encode the bundled photo (``photos`` > 1: that many variants) at each resolution;
    one file {resolution: state} or {resolution: [state, ...]}."""
    states = {}
    images = photo_variants(photos)
    for resolution in resolutions:
        ae = load_autoencoder("mesh", resolution=resolution)
        encoded = [ae.encode(image)[0].state_dict() for image in images]
        ae.encoder.close()
        states[resolution] = encoded[0] if photos == 1 else encoded
    torch.save(states, path)
    size_mb = Path(path).stat().st_size / 2**20
    print(f"wrote {photos} appearance(s) at {', '.join(map(str, resolutions))} px to {path} ({size_mb:.1f} MB)")


def saved_resolutions(path: str) -> list[int]:
    return sorted(torch.load(path, map_location="cpu", weights_only=True))


def load_appearances(path: str, resolution: int, device: torch.device) -> list[MeshAppearance]:
    """Every appearance saved at ``resolution`` in a --save-appearance file."""
    states = torch.load(path, map_location="cpu", weights_only=True)
    if resolution not in states:
        raise SystemExit(f"{path} holds appearances at {sorted(states)} px, not {resolution}; "
                         f"remake it with --save-appearance {path} --resolutions {resolution}")
    saved = states[resolution]
    return [MeshAppearance.from_state_dict(state, device=device)
            for state in (saved if isinstance(saved, list) else [saved])]


def load_appearance(path: str, resolution: int, device: torch.device) -> MeshAppearance:
    return load_appearances(path, resolution, device)[0]


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
                  appearance_file: str | None, photos: int = 1, loop: bool = False) -> list[dict]:
    """Throughput per batch size: median seconds of one synchronised decode of ``batch``
    frames of one photo, or (``photos`` > 1) of ``batch`` frames of each of ``photos``
    photos in one batched render; with ``loop`` the same frames photo by photo too."""
    dev = torch.device(device)
    ae = load_autoencoder("mesh", resolution=resolution, device=dev)
    if appearance_file:
        saved = load_appearances(appearance_file, resolution, dev)
        apps = [saved[i % len(saved)] for i in range(photos)]
    else:
        apps = [ae.encode(image)[0] for image in photo_variants(photos)]
        ae.encoder.close()
    target = apps[0] if photos == 1 else AppearanceBatch.stack(apps)

    def batched(chunk: torch.Tensor):
        return ae.decode(target, chunk if photos > 1 else chunk[0], paste_back=paste_back)

    def photo_by_photo(chunk: torch.Tensor):
        outs = [ae.decode(app, m, paste_back=paste_back) for app, m in zip(apps, chunk)]
        if len({o.shape for o in outs}) == 1:
            return torch.stack(outs)                 # as decode(list) returned them before
        return outs

    rows = []
    for batch in batches:
        rng = np.random.default_rng(batch)
        calls = [torch.from_numpy(np.stack([random_motions(app.m0, batch, rng) for app in apps])).to(dev)
                 for _ in range(repeats + 2)]        # [photos, batch, D] per call
        row = {"resolution": resolution, "photos": photos, "batch": batch}
        decoders = {"": batched, "loop_": photo_by_photo} if loop else {"": batched}
        if loop:  # the two paths must agree (untimed): largest difference in levels 0..255
            row["max_diff_levels"] = max(int((a.int() - b.int()).abs().max())
                                         for a, b in zip(batched(calls[0]), photo_by_photo(calls[0])))
        for name, times in _timed(decoders, calls, dev).items():
            median = statistics.median(times)
            row.update({f"{name}ms_per_call": 1000 * median, f"{name}fps": photos * batch / median,
                        f"{name}min_ms": 1000 * min(times)})
        rows.append(row)
        del calls
    return rows


def _timed(decoders: dict, calls: list[torch.Tensor], dev: torch.device) -> dict[str, list[float]]:
    """Seconds per call (device synchronised) of each decoder, after two warm-up calls
    (allocator, kernels); the decoders take turns call by call, so a load change on a
    shared machine hits them alike."""
    for chunk in calls[:2]:
        for decode in decoders.values():
            decode(chunk)
    _sync(dev)
    times = {name: [] for name in decoders}
    for chunk in calls[2:]:
        for name, decode in decoders.items():
            start = time.perf_counter()
            decode(chunk)
            _sync(dev)
            times[name].append(time.perf_counter() - start)
    return times


def print_batch_table(args: argparse.Namespace, batches: list[int]) -> None:
    """The --batches table: one row per resolution and batch size."""
    loop = args.loop and args.photos > 1
    if args.photos > 1:
        print(f"{args.photos} photos per call, one batched render (stacked once, not timed); frames/s counts "
              f"all photos' frames" + ("; 'loop' = the same frames decoded photo by photo" if loop else ""))
    head = f"{'resolution':>10} {'photos':>6} {'batch':>6} {'ms/call':>9} {'min ms':>8} {'frames/s':>9}"
    print(head + (f" {'loop ms':>9} {'loop fr/s':>9} {'speed-up':>8} {'max diff':>8}" if loop else ""))
    for resolution in args.resolutions:
        for r in bench_batches(resolution, args.device, batches, args.repeats, not args.no_paste_back,
                               args.appearance, photos=args.photos, loop=loop):
            line = (f"{r['resolution']:>10} {r['photos']:>6} {r['batch']:>6} {r['ms_per_call']:>9.2f} "
                    f"{r['min_ms']:>8.2f} {r['fps']:>9.1f}")
            if loop:
                line += (f" {r['loop_ms_per_call']:>9.2f} {r['loop_fps']:>9.1f} "
                         f"{r['loop_ms_per_call'] / r['ms_per_call']:>7.2f}x {r['max_diff_levels']:>8}")
            print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1, help="frames per decode call")
    parser.add_argument("--photos", type=int, default=1, help="different sessions decoded together")
    parser.add_argument("--resolutions", type=int, nargs="+",
                        help="default: 256 512, or with --appearance those the file holds")
    parser.add_argument("--no-paste-back", action="store_true")
    parser.add_argument("--batches", type=int, nargs="+", help="throughput table over these batch sizes")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per batch size (median)")
    parser.add_argument("--appearance", help="file from --save-appearance: decode without the face engine")
    parser.add_argument("--save-appearance", metavar="FILE",
                        help="encode the bundled photo (--photos K: K variants of it), save, exit")
    parser.add_argument("--loop", action="store_true",
                        help="with --photos K: also time the K photos decoded one by one")
    args = parser.parse_args()
    if args.resolutions is None:
        args.resolutions = saved_resolutions(args.appearance) if args.appearance else [256, 512]
    if args.save_appearance:
        save_appearances(args.save_appearance, args.resolutions, args.photos)
        return
    on_cuda = args.device.startswith("cuda")
    machine = torch.cuda.get_device_name(torch.device(args.device)) if on_cuda else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    paste = "off" if args.no_paste_back else "on"
    if args.batches or args.appearance:
        batches = args.batches or [1, 8, 32, 128]
        print(f"mesh decoder on {args.device} ({machine}); torch {torch.__version__}; paste-back {paste}; "
              f"median of {args.repeats} synchronised calls")
        print_batch_table(args, batches)
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
