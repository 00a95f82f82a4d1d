"""``dystream bench generator``: time one streaming frame of the generator.

A frame = both audio encoders' incremental step + the transformer step + every
sampler step for every guidance branch, for ``--batch`` sessions at once (1 by
default), synchronised, after warm-up. On CUDA the frame is also timed as one
CUDA-graph replay and checked against the eager path. Weights are random (speed
does not depend on them).
"""

from __future__ import annotations

import argparse
import platform
import time

from dystream.errors import InputError


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target")
    gen = sub.add_parser("generator", help="per-frame cost of the streaming generator")
    gen.add_argument("--preset", default="small", help="generator size preset: small or paper (random weights)")
    gen.add_argument("--weights", help="... or the architecture of trained weights (.safetensors), e.g. "
                                       "dystream/weights/generator-small.safetensors, the bundled ones")
    gen.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    gen.add_argument("--frames", type=int, default=500, help="timed frames (after warm-up)")
    gen.add_argument("--warmup", type=int, default=50, help="untimed frames first")
    gen.add_argument("--steps", type=int, default=5, help="flow sampler steps per frame")
    gen.add_argument("--threads", type=int, default=1,
                     help="CPU threads for torch (1 is fastest for batch-1 steps on a small CPU)")
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    gen.add_argument("--batch", type=int, default=1, help="sessions stepped together in one frame step")
    gen.add_argument("--no-graphs", action="store_true",
                     help="skip the CUDA-graph timing (also: DYSTREAM_CUDA_GRAPHS=0)")
    gen.set_defaults(func=run_generator)
    exact = sub.add_parser("streaming", help="streaming == offline: max motion difference over random chunkings")
    exact.add_argument("--preset", default="small", help="generator size preset (random weights) ...")
    exact.add_argument("--weights", help="... or trained weights (.safetensors)")
    exact.add_argument("--encoder-dtype", choices=["float64", "float32"], default="float64",
                       help="the audio encoders' dtype: float64 as CPU inference runs them (default), or "
                            "float32 as a GPU does")
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


def _summary(ms) -> dict:
    import numpy as np

    ms = np.asarray(ms, dtype=np.float64)
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)), "max_ms": float(ms.max())}


def bench_generator(preset_name="small", device="cpu", frames=500, warmup=50, steps=5, threads=1,
                    dtype="float32", batch=1, graphs=True, compare_frames=200, weights=None) -> dict:
    """Per-frame times in ms (median, p95, ...) of the streaming generator step for ``batch`` sessions,
    for a size preset with random weights or, with ``weights``, the model a weights file holds.

    ``eager``: both encoders' ``step`` + ``Rollout.step`` (what a streaming session runs).
    ``graphed`` (CUDA only, unless ``graphs`` is False or DYSTREAM_CUDA_GRAPHS=0): the same
    frame as one CUDA-graph replay; ``graph_max_abs_diff`` is its largest motion difference
    from the eager path over ``compare_frames`` frames of the same random audio.
    """
    import numpy as np
    import torch

    from dystream.generator.config import preset
    from dystream.generator.graphs import graphs_enabled
    from dystream.generator.inference import Rollout
    from dystream.generator.model import Generator
    from dystream.generator.weights import load_generator, prepare_for_inference
    from dystream.motion import REST

    if frames < 1:
        raise InputError("--frames must be >= 1")
    if batch < 1:
        raise InputError("--batch must be >= 1")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda, but torch sees no CUDA device here; use --device cpu")
    if threads > 0 and device.type == "cpu":
        torch.set_num_threads(threads)
    torch_dtype = getattr(torch, dtype)
    torch.manual_seed(0)
    # The model as inference runs it (float64 audio encoders on the CPU); another --dtype casts all of it.
    model = load_generator(weights, device) if weights else prepare_for_inference(Generator(preset(preset_name)), device)
    if torch_dtype != torch.float32:
        model = model.to(dtype=torch_dtype)
    counts = model.parameter_counts()
    enc_s, enc_o = model.self_encoder, model.other_encoder
    anchors, seeds = np.repeat(REST[None], batch, axis=0), list(range(batch))
    # New 640 samples per stream and frame (the encoders read their whole step window).
    a_s = torch.randn(batch, enc_s.step_samples, device=device, dtype=torch_dtype) * 0.1
    a_o = torch.randn(batch, enc_o.step_samples, device=device, dtype=torch_dtype) * 0.1
    result = {
        "preset": None if weights else preset_name, "weights": weights, "device": str(device), "dtype": dtype,
        "threads": torch.get_num_threads(),
        "frames": frames, "steps": steps, "batch": batch, "parameters": counts,
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
        (platform.processor() or platform.machine()),
        "graphed": None, "graph_note": "", "graph_max_abs_diff": None,
    }
    total, encode_ms, cpu_ms = [], [], []
    with torch.inference_mode():
        # Batch 1 is the streaming session's own path (one anchor frame, one seed).
        rollout = Rollout(model, REST, steps=steps, seed=0) if batch == 1 else \
            Rollout(model, anchors, steps=steps, seed=seeds)
        result["branches"] = rollout.plan.size
        st_s, st_o = enc_s.initial_state(batch, device), enc_o.initial_state(batch, device)
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
        eager = _summary(total)
        eager.update({"cpu_median_ms": float(np.median(cpu_ms)), "cpu_p95_ms": float(np.percentile(cpu_ms, 95)),
                      "encoders_median_ms": float(np.median(encode_ms))})
        result["eager"] = eager

        if device.type != "cuda":
            result["graph_note"] = "CUDA graphs are for GPUs; the CPU runs eager"
        elif not graphs or not graphs_enabled():
            result["graph_note"] = "CUDA graphs switched off (--no-graphs or DYSTREAM_CUDA_GRAPHS=0)"
        else:
            try:
                result.update(_bench_graphed(model, anchors, seeds, steps, a_s, a_o, frames, warmup,
                                             compare_frames))
            except Exception as exc:  # never lose the eager numbers to a graph problem
                result["graphed"] = None
                result["graph_note"] = f"graphed run failed: {type(exc).__name__}: {exc}"
    return result


def _bench_graphed(model, anchors, seeds, steps, a_s, a_o, frames, warmup, compare_frames) -> dict:
    """Time the CUDA-graphed frame and compare its motion with the eager path's."""
    import torch

    from dystream.generator.graphs import frame_step
    from dystream.generator.inference import Rollout

    device = a_s.device
    step, graphed = frame_step(model, anchors, seeds, steps=steps, graphs=True)
    if not graphed:
        return {"graph_note": "CUDA graph capture failed (warning above); graphed timing skipped"}
    step.self_audio.copy_(a_s)
    step.other_audio.copy_(a_o)
    times = []
    for i in range(warmup + frames):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    out = {"graphed": _summary(times)}

    # Same function? Eager reference (encoders' step + Rollout.step) vs graph replays, fresh state,
    # new random audio every frame.
    step.reset()
    enc_s, enc_o = model.self_encoder, model.other_encoder
    batch = a_s.shape[0]
    rollout = Rollout(model, anchors[0], steps=steps, seed=seeds[0]) if batch == 1 else \
        Rollout(model, anchors, steps=steps, seed=seeds)
    st_s = enc_s.initial_state(batch, device)
    st_o = enc_o.initial_state(batch, device)
    g = torch.Generator(device=device).manual_seed(1)
    worst = 0.0
    for _ in range(compare_frames):
        s = 0.1 * torch.randn(a_s.shape, device=device, generator=g, dtype=torch.float32).to(a_s.dtype)
        o = 0.1 * torch.randn(a_o.shape, device=device, generator=g, dtype=torch.float32).to(a_o.dtype)
        f_s, st_s = enc_s.step(s, st_s)
        f_o, st_o = enc_o.step(o, st_o)
        reference = rollout.step(f_s[:, 0], f_o[:, 0])
        step.self_audio.copy_(s)
        step.other_audio.copy_(o)
        worst = max(worst, float((step() - reference).abs().max()))
    out["graph_max_abs_diff"] = worst
    out["compare_frames"] = compare_frames
    return out


def run_generator(args) -> int:
    r = bench_generator(args.preset, args.device, args.frames, args.warmup, args.steps, args.threads, args.dtype,
                        batch=args.batch, graphs=not args.no_graphs, weights=args.weights)
    model = f"weights {r['weights']}" if r["weights"] else f"preset {r['preset']}"
    print(f"generator {model} on {r['device']} ({r['device_name']}), torch {r['torch']}, "
          f"{r['dtype']}, {r['threads']} CPU thread(s)")
    for name, n in r["parameters"].items():
        print(f"  parameters  {name:<15} {n / 1e6:8.2f} M")
    print(f"  per frame: 2 encoder steps (640 new samples per stream) + transformer step + {r['steps']} sampler "
          f"steps x {r['branches']} guidance branches, batch {r['batch']} session(s), synchronised, "
          f"{r['frames']} frames after warm-up")
    e = r["eager"]
    print(f"  {'':<8} {'median':>8} {'p95':>8} {'max':>8}   ms per frame   frames/s at batch {r['batch']}")
    print(f"  {'eager':<8} {e['median_ms']:8.2f} {e['p95_ms']:8.2f} {e['max_ms']:8.2f}   wall clock     "
          f"{r['batch'] * 1000 / e['median_ms']:10.0f}   (encoders alone median {e['encoders_median_ms']:.2f} ms)")
    if r["device"] == "cpu" or r["device"].startswith("cpu"):
        print(f"  {'':<8} {e['cpu_median_ms']:8.2f} {e['cpu_p95_ms']:8.2f} {'':>8}   CPU time of the thread "
              "(excludes time other processes held the core)")
    g = r["graphed"]
    if g is not None:
        print(f"  {'graphed':<8} {g['median_ms']:8.2f} {g['p95_ms']:8.2f} {g['max_ms']:8.2f}   wall clock     "
              f"{r['batch'] * 1000 / g['median_ms']:10.0f}   (CUDA graph, one replay per frame)")
        print(f"  graph vs eager: max |motion difference| over {r['compare_frames']} frames = "
              f"{r['graph_max_abs_diff']:.2e}")
    if r["graph_note"]:
        print(f"  note: {r['graph_note']}")
    budget = 1000 / 25
    best = min(e["median_ms"], g["median_ms"]) if g is not None else e["median_ms"]
    print(f"  real-time factor per session at 25 fps: {budget / best:.1f}x (median, best path)")
    return 0


def _active_random_generator(preset_name: str, seed: int = 0):
    """Random weights that move (see dystream.generator.untrained)."""
    from dystream.generator.config import preset
    from dystream.generator.untrained import active_random_generator

    return active_random_generator(preset(preset_name), seed, head_scale=0.02)


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
    from dystream.streaming.session import feed_interleaved

    offline = generate_motion(model, self_audio, other_audio, anchor, seed=seed)
    session = StreamingSession(model, anchor, seed=seed)
    worst, per_frame = 0.0, np.zeros(len(offline))
    for kind in range(chunkings):
        session.reset()
        sizes = [_chunk_sizes(len(self_audio), kind, rng), _chunk_sizes(len(other_audio), kind, rng)]
        frames = feed_interleaved(session, self_audio, other_audio, sizes[0], sizes[1], rng)
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
    model.set_encoder_dtype(getattr(torch, args.encoder_dtype))
    source = args.weights or f"preset {args.preset}, random weights"
    rng = np.random.default_rng(0)
    n = int(args.seconds * 16000)
    print(f"streaming == offline ({source}), CPU float32, audio encoders {args.encoder_dtype}, "
          f"{args.clips} clips x {args.seconds:g} s, "
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
