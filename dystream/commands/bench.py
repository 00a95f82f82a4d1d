"""``dystream bench generator``: time one streaming frame of the generator.

A frame = both audio encoders' incremental step + the transformer step + every
sampler step for every guidance branch, batch 1, synchronised, after warm-up.
Weights are random (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import platform
import time

from dystream.errors import InputError


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target")
    gen = sub.add_parser("generator", help="per-frame cost of the streaming generator")
    gen.add_argument("--preset", default="small", help="generator size preset: small or paper")
    gen.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    gen.add_argument("--frames", type=int, default=500, help="timed frames (after warm-up)")
    gen.add_argument("--warmup", type=int, default=50, help="untimed frames first")
    gen.add_argument("--steps", type=int, default=5, help="flow sampler steps per frame")
    gen.add_argument("--threads", type=int, default=1,
                     help="CPU threads for torch (1 is fastest for batch-1 steps on a small CPU)")
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    gen.set_defaults(func=run_generator)
    exact = sub.add_parser("streaming", help="streaming == offline: max motion difference over random chunkings")
    exact.add_argument("--preset", default="small", help="generator size preset (random weights) ...")
    exact.add_argument("--weights", help="... or trained weights (.safetensors)")
    exact.add_argument("--clips", type=int, default=3, help="random 'speech' clips")
    exact.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    exact.add_argument("--chunkings", type=int, default=20,
                       help="chunkings per clip (incl. 1-sample chunks over 1 s and one single chunk)")
    exact.add_argument("--horizons", default="10,60,300",
                       help="comma-separated clip lengths in seconds for the growth-with-length table")
    exact.set_defaults(func=run_streaming)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_generator(preset_name="small", device="cpu", frames=500, warmup=50, steps=5, threads=1,
                    dtype="float32") -> dict:
    """Per-frame times in ms (median, p95, ...) of the streaming generator step."""
    import numpy as np
    import torch

    from dystream.generator.config import preset
    from dystream.generator.inference import Rollout
    from dystream.generator.model import Generator
    from dystream.motion import REST

    if frames < 1:
        raise InputError("--frames must be >= 1")
    if threads > 0 and torch.device(device).type == "cpu":
        torch.set_num_threads(threads)
    device = torch.device(device)
    torch.manual_seed(0)
    model = Generator(preset(preset_name)).to(device=device, dtype=getattr(torch, dtype)).eval()
    counts = model.parameter_counts()
    enc_s, enc_o = model.self_encoder, model.other_encoder
    audio = torch.randn(1, enc_s.step_samples + enc_o.step_samples, device=device, dtype=getattr(torch, dtype)) * 0.1
    a_s, a_o = audio[:, : enc_s.step_samples], audio[:, enc_s.step_samples:]
    total, encode_ms, cpu_ms = [], [], []
    with torch.inference_mode():
        rollout = Rollout(model, REST, steps=steps, seed=0)
        st_s, st_o = enc_s.initial_state(1, device, a_s.dtype), enc_o.initial_state(1, device, a_o.dtype)
        for i in range(warmup + frames):
            _sync(device)
            c0 = time.thread_time()
            t0 = time.perf_counter()
            f_s, st_s = enc_s.step(a_s, st_s)
            f_o, st_o = enc_o.step(a_o, st_o)
            _sync(device)
            t1 = time.perf_counter()
            rollout.step(f_s[:, 0], f_o[:, 0])
            _sync(device)
            t2 = time.perf_counter()
            c2 = time.thread_time()
            if i >= warmup:
                cpu_ms.append((c2 - c0) * 1e3)
                total.append((t2 - t0) * 1e3)
                encode_ms.append((t1 - t0) * 1e3)
    total, encode_ms, cpu_ms = np.array(total), np.array(encode_ms), np.array(cpu_ms)
    return {
        "preset": preset_name, "device": str(device), "dtype": dtype, "threads": torch.get_num_threads(),
        "frames": frames, "steps": steps, "branches": rollout.plan.size, "parameters": counts,
        "median_ms": float(np.median(total)), "p95_ms": float(np.percentile(total, 95)),
        "max_ms": float(total.max()),
        # CPU time of this thread: what the frame costs when no other process shares the core.
        "cpu_median_ms": float(np.median(cpu_ms)), "cpu_p95_ms": float(np.percentile(cpu_ms, 95)), "encoders_median_ms": float(np.median(encode_ms)),
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}",
    }


def run_generator(args) -> int:
    r = bench_generator(args.preset, args.device, args.frames, args.warmup, args.steps, args.threads, args.dtype)
    print(f"generator preset {r['preset']} on {r['device']} ({r['machine']}), {r['dtype']}, "
          f"{r['threads']} thread(s)")
    for name, n in r["parameters"].items():
        print(f"  parameters  {name:<15} {n / 1e6:8.2f} M")
    print(f"  per frame: 2 encoder steps + transformer step + {r['steps']} sampler steps x "
          f"{r['branches']} guidance branches, batch 1, {r['frames']} frames after warm-up")
    print(f"  {'median':>8} {'p95':>8} {'max':>8}   (ms per frame; encoders alone median "
          f"{r['encoders_median_ms']:.2f} ms)")
    print(f"  {r['median_ms']:8.2f} {r['p95_ms']:8.2f} {r['max_ms']:8.2f}   wall clock")
    print(f"  {r['cpu_median_ms']:8.2f} {r['cpu_p95_ms']:8.2f} {'':>8}   CPU time of the thread "
          "(excludes time other processes held the core)")
    budget = 1000 / 25
    print(f"  real-time factor at 25 fps: {budget / r['median_ms']:.1f}x (median)")
    return 0


def _active_random_generator(preset_name: str, seed: int = 0):
    """Random weights, with the zero-initialised layers (head modulation and output, null
    embeddings) given small values: a fresh head outputs the motion mean exactly, which
    would make any comparison pass trivially."""
    import torch

    from dystream.generator.config import preset
    from dystream.generator.model import Generator
    from dystream.motion import REST, TYPICAL_MAX

    torch.manual_seed(seed)
    model = Generator(preset(preset_name))
    head = model.head
    with torch.no_grad():
        for layer in (head.time_modulation[1], head.cond_modulation[1], head.out_modulation[1], head.out):
            layer.weight.normal_(0.0, 0.02)
            layer.bias.normal_(0.0, 0.02)
        for null in (model.null_self, model.null_other, model.null_anchor):
            null.normal_(0.0, 0.5)
    model.set_motion_stats(torch.from_numpy(REST), torch.from_numpy(TYPICAL_MAX) / 3)
    return model.eval()


def _speech_like(num_samples: int, rng):
    import numpy as np

    t = np.arange(num_samples) / 16000
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6)), 0, None)
    tone = np.sin(2 * np.pi * rng.uniform(120, 220) * t)
    return (0.2 * envelope * (tone + 0.5 * rng.standard_normal(num_samples))).astype(np.float32)


def _chunk_sizes(total: int, kind: int, rng) -> list[int]:
    if kind == 0:  # 1-sample chunks over the first second
        return [1] * min(16000, total) + ([total - 16000] if total > 16000 else [])
    if kind == 1:  # everything at once
        return [total]
    scale = int(rng.choice([30, 640, 4000, 20000]))
    sizes, left = [], total
    while left > 0:
        n = int(min(left, rng.integers(1, scale + 1)))
        sizes.append(n)
        left -= n
    return sizes


def streaming_difference(model, self_audio, other_audio, anchor, chunkings: int, rng, seed: int = 0) -> dict:
    """Max |streaming - offline| of motion over ``chunkings`` random chunkings of both streams."""
    import numpy as np

    from dystream.generator.inference import generate_motion
    from dystream.streaming import StreamingSession

    offline = generate_motion(model, self_audio, other_audio, anchor, seed=seed)
    session = StreamingSession(model, anchor, seed=seed)
    worst, per_frame = 0.0, np.zeros(len(offline))
    for kind in range(chunkings):
        session.reset()
        sizes = [_chunk_sizes(len(self_audio), kind, rng), _chunk_sizes(len(other_audio), kind, rng)]
        pos, frames = [0, 0], []
        audio = (self_audio, other_audio)
        while sizes[0] or sizes[1]:
            s = int(rng.integers(2)) if sizes[0] and sizes[1] else (0 if sizes[0] else 1)
            n = sizes[s].pop(0)
            frames += session.feed(s, audio[s][pos[s]: pos[s] + n])
            pos[s] += n
        frames += session.flush()
        streamed = np.stack([f.motion for f in frames])
        if streamed.shape != offline.shape:
            raise AssertionError(f"streaming made {streamed.shape} frames, offline {offline.shape}")
        diff = np.abs(streamed - offline).max(axis=1)
        per_frame = np.maximum(per_frame, diff)
        worst = max(worst, float(diff.max()))
    return {"max_abs": worst, "per_frame": per_frame, "motion_std": float(offline.std())}


def run_streaming(args) -> int:
    import numpy as np
    import torch

    from dystream.generator.weights import load_generator
    from dystream.motion import REST

    torch.set_num_threads(1)
    model = load_generator(args.weights) if args.weights else _active_random_generator(args.preset)
    source = args.weights or f"preset {args.preset}, random weights"
    rng = np.random.default_rng(0)
    n = int(args.seconds * 16000)
    print(f"streaming == offline ({source}), CPU float32, {args.clips} clips x {args.seconds:g} s, "
          f"{args.chunkings} chunkings each (1-sample chunks over 1 s, one single chunk, random sizes)")
    worst = 0.0
    for clip in range(args.clips):
        a, b = _speech_like(n, rng), _speech_like(n, rng)
        r = streaming_difference(model, a, b, REST, args.chunkings, rng, seed=clip)
        worst = max(worst, r["max_abs"])
        print(f"  clip {clip}: max |streaming - offline| = {r['max_abs']:.2e}  (motion std {r['motion_std']:.3f})")
    print(f"  worst: {worst:.2e}  ({'within' if worst <= 1e-5 else 'ABOVE'} the 1e-5 bound)")
    horizons = [float(h) for h in args.horizons.split(",") if h]
    if horizons:
        print("  growth with length (one long clip; 1-sample, single and one random chunking; max difference up to each time):")
        longest = int(max(horizons) * 16000)
        a, b = _speech_like(longest, rng), _speech_like(longest, rng)
        r = streaming_difference(model, a, b, REST, 3, rng, seed=7)
        for h in horizons:
            upto = int(h * 25)
            print(f"    first {h:6.0f} s: {r['per_frame'][:upto].max():.2e}")
    return 0 if worst <= 1e-5 else 1
