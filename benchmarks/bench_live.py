"""Live engine speed: tick time for N sessions, one session's latency in real time, memory per session.

    python benchmarks/bench_live.py --weights dystream/weights/generator-small.safetensors --resolution 256 \\
        --sessions 1 2 --realtime 20                                   # this CPU
    python benchmarks/bench_decoder.py --save-appearance app.pt --photos 4 --resolutions 512   # needs the face engine
    python benchmarks/bench_live.py --device cuda --preset large --appearance app.pt --resolution 512 \\
        --sessions 1 16 32 64 96 128 --realtime 20                     # a GPU box

Tick table: an engine with room for exactly N sessions (CUDA graphs for its batch-size
buckets) holds N sessions fed with speech-like audio for both streams; the clock is
advanced 40 ms per tick so every session is due at every tick, and each tick's wall time
is measured: the batched frame step, the batched decode of N photos, the copy to the host
and the JPEG encoding of every frame (``tick p99 <= 30 ms`` leaves a quarter of the frame
period to the server). Real time: one session on the engine's own clock thread, fed 40 ms
chunks as a microphone would, its compute latency (frame out minus the arrival of the
last sample it needs) and audio-to-frame latency (+ the lookahead) from the session's
stats. Memory: the device memory an engine of N sessions holds, and the growth per session.
"""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time
import traceback

import numpy as np
import torch

from dystream.config import SAMPLES_PER_FRAME


def _pipeline(args, device):
    from dystream.autoencoder import load_autoencoder
    from dystream.generator.config import preset
    from dystream.generator.model import Generator
    from dystream.generator.weights import load_generator, prepare_for_inference
    from dystream.pipeline import Pipeline

    torch.manual_seed(0)
    model = load_generator(args.weights, device) if args.weights else prepare_for_inference(
        Generator(preset(args.preset)), device)
    autoencoder = load_autoencoder("mesh", resolution=args.resolution, device=device)
    return Pipeline(model, autoencoder)


def _avatars(args, pipeline, device):
    if args.appearance:
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_decoder import load_appearances

        appearances = load_appearances(args.appearance, args.resolution, device)
        return [pipeline.avatar(a.m0, a) for a in appearances]
    from dystream.video import bundled_photo

    return [pipeline.prepare(bundled_photo())]


def _speech(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6)), 0, None)
    return (0.2 * envelope * (np.sin(2 * np.pi * rng.uniform(120, 220) * t) + 0.5 * rng.standard_normal(n))
            ).astype(np.float32)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tick_table(args, pipeline, avatars, device, sessions: int) -> dict:
    from dystream.live.engine import Engine

    clock = [0.0]
    _sync(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    engine = Engine(pipeline, capacity=sessions, clock=lambda: clock[0], graphs=not args.no_graphs,
                    jpeg_quality=args.jpeg_quality, encode_threads=args.encode_threads, outbox_frames=4)
    live = [engine.open(avatar=avatars[k % len(avatars)], seed=k) for k in range(sessions)]
    audio = _speech(SAMPLES_PER_FRAME * 250, 1)
    times, made = [], 0
    for k in range(args.warmup + args.ticks):
        clock[0] += 0.04
        chunk = audio[(k % 240) * SAMPLES_PER_FRAME:(k % 240 + 1) * SAMPLES_PER_FRAME]
        for session in live:
            session.feed("self", chunk, now=clock[0])
            session.feed("other", chunk[::-1].copy(), now=clock[0])
        _sync(device)
        t0 = time.perf_counter()
        count = engine.tick(clock[0])
        _sync(device)
        if k >= args.warmup:
            times.append(time.perf_counter() - t0)
            made += count
        for session in live:
            session.take()
    memory = (torch.cuda.memory_allocated(device) - before) if device.type == "cuda" else None
    ms = np.asarray(times) * 1e3
    row = {"sessions": sessions, "ticks": len(ms), "frames_per_tick": made / len(ms),
           "tick_ms": {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
                       "p99": float(np.percentile(ms, 99)), "max": float(ms.max())},
           "graphs": sorted(engine.graphs), "device_memory_mb": None if memory is None else memory / 2**20,
           "frames_per_s": made / (ms.sum() / 1e3)}
    row["holds_25fps_with_p99_under_30ms"] = bool(row["tick_ms"]["p99"] <= 30.0 and row["frames_per_tick"] == sessions)
    for session in live:
        engine.close(session)
    engine.stop()
    return row


def realtime(args, pipeline, avatars, seconds: float) -> dict:
    """One session on the engine's clock thread, fed in real time from another thread."""
    from dystream.live.engine import Engine

    engine = Engine(pipeline, capacity=1, graphs=not args.no_graphs, jpeg_quality=args.jpeg_quality,
                    encode_threads=args.encode_threads)
    session = engine.open(avatar=avatars[0], seed=0)
    audio = _speech(int(SAMPLES_PER_FRAME * 25 * (seconds + 1)), 2)
    engine.start()
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            session.take()
            time.sleep(0.01)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    start = time.monotonic()
    frames = int(seconds * 25)
    for k in range(frames):
        delay = start + (k + 1) * 0.04 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        chunk = audio[k * SAMPLES_PER_FRAME:(k + 1) * SAMPLES_PER_FRAME]
        session.feed("self", chunk)
        session.feed("other", chunk[::-1].copy())
    time.sleep(0.3)
    stop.set()
    stats = session.stats()
    engine.stop()
    return {"seconds": seconds, **stats, "engine": engine.stats()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="small", help="network preset with random weights (speed only)")
    parser.add_argument("--weights", help="... or a weights file, e.g. the bundled one")
    parser.add_argument("--resolution", type=int, default=256, choices=[256, 512])
    parser.add_argument("--appearance", help="saved appearances (bench_decoder.py --save-appearance): no face engine needed")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--realtime", type=float, default=20.0, help="seconds of one real-time session (0: skip)")
    parser.add_argument("--jpeg-quality", type=int, default=85)
    parser.add_argument("--encode-threads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-graphs", action="store_true")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pipeline = _pipeline(args, device)
    avatars = _avatars(args, pipeline, device)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
              (platform.processor() or platform.machine()), "torch": torch.__version__,
              "model": args.weights or f"preset {args.preset} (random weights)",
              "parameters": pipeline.model.parameter_counts()["total"], "resolution": args.resolution,
              "jpeg_quality": args.jpeg_quality, "encode_threads": args.encode_threads, "rows": []}
    print(f"live engine on {result['device']}, {result['model']}, {args.resolution} px, JPEG q{args.jpeg_quality}")
    print(f"{'sessions':>8} {'tick p50':>9} {'p95':>7} {'p99':>7} {'max':>7}  frames/s  memory MB  holds 25 fps")
    for n in args.sessions:
        try:
            row = tick_table(args, pipeline, avatars, device, n)
        except Exception as exc:  # report and go on with the next size
            traceback.print_exc()
            result["rows"].append({"sessions": n, "error": f"{type(exc).__name__}: {exc}"})
            continue
        result["rows"].append(row)
        t = row["tick_ms"]
        memory = "-" if row["device_memory_mb"] is None else f"{row['device_memory_mb']:.0f}"
        print(f"{n:8d} {t['p50']:9.2f} {t['p95']:7.2f} {t['p99']:7.2f} {t['max']:7.2f}  {row['frames_per_s']:8.0f}"
              f"  {memory:>9}  {row['holds_25fps_with_p99_under_30ms']}", flush=True)
    sizes = [r for r in result["rows"] if r.get("device_memory_mb") is not None]
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        result["memory_per_session_mb"] = (b["device_memory_mb"] - a["device_memory_mb"]) / (b["sessions"] - a["sessions"])
        print(f"device memory per added session: {result['memory_per_session_mb']:.1f} MB")
    if args.realtime > 0:
        try:
            result["realtime"] = realtime(args, pipeline, avatars, args.realtime)
            r = result["realtime"]
            print(f"one session in real time for {args.realtime:.0f} s: compute latency {r['compute_latency_ms']}, "
                  f"audio-to-frame {r['audio_to_frame_latency_ms']}, frames {r['frames']}, dropped "
                  f"{r['dropped_frames']}, skipped {r['skipped_frames']}")
        except Exception as exc:
            traceback.print_exc()
            result["realtime"] = {"error": f"{type(exc).__name__}: {exc}"}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
