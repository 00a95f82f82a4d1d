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
