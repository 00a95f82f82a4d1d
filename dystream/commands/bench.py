"""``dystream bench generator``: time one streaming frame of the generator.

A frame = both audio encoders' step + the transformer step + every sampler step for
every guidance branch (:class:`dystream.generator.sampling.FrameStep`, the step every
path runs), for ``--batch`` sessions at once, synchronised, after warm-up. On CUDA
the frame is also timed as one CUDA-graph replay and checked against the eager step.
A preset gets random weights (speed does not depend on them); ``--weights`` times the
model a weights file holds.
"""

from __future__ import annotations

import argparse
import platform
import time

from dystream.errors import InputError


def configure(parser: argparse.ArgumentParser) -> None:
    from dystream.generator.config import PRESETS
    from dystream.generator.sampling import SAMPLER_STEPS

    sub = parser.add_subparsers(dest="target", metavar="TARGET")
    gen = sub.add_parser("generator", help="per-frame cost of the streaming generator (motion only)")
    gen.add_argument("--preset", default="small", choices=sorted(PRESETS),
                     help="network preset with random weights (default small)")
    gen.add_argument("--weights", help="... or the model of a weights file (.safetensors), e.g. "
                                       "dystream/weights/generator-small.safetensors, the bundled one")
    gen.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    gen.add_argument("--frames", type=int, default=500, help="timed frames (after warm-up)")
    gen.add_argument("--warmup", type=int, default=50, help="untimed frames first")
    gen.add_argument("--steps", type=int, default=SAMPLER_STEPS, help="flow sampler steps per frame")
    gen.add_argument("--threads", type=int, default=1,
                     help="CPU threads for torch (1 is fastest for batch-1 steps on a small CPU)")
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    gen.add_argument("--batch", type=int, default=1, help="sessions stepped together in one frame step")
    gen.add_argument("--no-graphs", action="store_true",
                     help="skip the CUDA-graph timing (also: DYSTREAM_CUDA_GRAPHS=0)")
    gen.set_defaults(func=run_generator)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _summary(ms) -> dict:
    import numpy as np

    ms = np.asarray(ms, dtype=np.float64)
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)), "max_ms": float(ms.max())}


def bench_generator(preset_name="small", device="cpu", frames=500, warmup=50, steps=None, threads=1,
                    dtype="float32", batch=1, graphs=True, compare_frames=200, weights=None) -> dict:
    """Per-frame times in ms (median, p95, ...) of the frame step for ``batch`` sessions.

    ``eager``: ``FrameStep`` called eagerly (encoders timed apart as ``encoders_median_ms``).
    ``graphed`` (CUDA only, unless ``graphs`` is False or DYSTREAM_CUDA_GRAPHS=0): the same
    frame as one CUDA-graph replay; ``graph_max_abs_diff`` is its largest motion difference
    from the eager step over ``compare_frames`` frames of the same random audio.
    """
    import numpy as np
    import torch

    from dystream.generator.config import preset
    from dystream.generator.graphs import graphs_enabled
    from dystream.generator.model import Generator
    from dystream.generator.sampling import SAMPLER_STEPS, FrameStep, Sampling
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
    sampling = Sampling(SAMPLER_STEPS if steps is None else steps)
    torch.manual_seed(0)
    # The model as inference runs it (float64 audio encoders on the CPU); another --dtype casts all of it.
    model = load_generator(weights, device) if weights else prepare_for_inference(Generator(preset(preset_name)), device)
    if torch_dtype != torch.float32:
        model = model.to(dtype=torch_dtype)
    anchors, seeds = np.repeat(REST[None], batch, axis=0), list(range(batch))
    result = {
        "preset": None if weights else preset_name, "weights": weights, "device": str(device), "dtype": dtype,
        "threads": torch.get_num_threads(), "frames": frames, "steps": sampling.steps, "batch": batch,
        "parameters": model.parameter_counts(), "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
        (platform.processor() or platform.machine()),
        "branches": sampling.plan.size, "graphed": None, "graph_note": "", "graph_max_abs_diff": None,
    }
    total, encode_ms, cpu_ms = [], [], []
    with torch.inference_mode():
        step = FrameStep(model, anchors, seeds, sampling)
        for audio in step.audio:  # new random audio every frame would only add its copy
            audio.copy_(0.1 * torch.randn(audio.shape))
        for i in range(warmup + frames):
            _sync(device)
            c0, t0 = time.thread_time(), time.perf_counter()
            features = step.encode()
            _sync(device)
            t1 = time.perf_counter()
            step.sample(*features)
            _sync(device)
            t2, c2 = time.perf_counter(), time.thread_time()
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
                result.update(_bench_graphed(model, anchors, seeds, sampling, frames, warmup, compare_frames))
            except Exception as exc:  # never lose the eager numbers to a graph problem
                result["graph_note"] = f"graphed run failed: {type(exc).__name__}: {exc}"
    return result


def _bench_graphed(model, anchors, seeds, sampling, frames, warmup, compare_frames) -> dict:
    """Time the CUDA-graphed frame and compare its motion with the eager step's."""
    import torch

    from dystream.generator.graphs import frame_step
    from dystream.generator.sampling import FrameStep

    device = model.device
    graphed, ok = frame_step(model, anchors, seeds, sampling, graphs=True)
    if not ok:
        return {"graph_note": "CUDA graph capture failed (warning above); graphed timing skipped"}
    times = []
    for i in range(warmup + frames):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        graphed()
        torch.cuda.synchronize(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    out = {"graphed": _summary(times)}
    # Same function? The eager step and graph replays from a fresh state, new random audio every frame.
    graphed.reset()
    eager = FrameStep(model, anchors, seeds, sampling)
    g = torch.Generator(device=device).manual_seed(1)
    worst = 0.0
    for _ in range(compare_frames):
        for a, b in zip(eager.audio, graphed.audio):
            a.copy_(0.1 * torch.randn(a.shape, device=device, generator=g))
            b.copy_(a)
        worst = max(worst, float((graphed() - eager()).abs().max()))
    out.update(graph_max_abs_diff=worst, compare_frames=compare_frames)
    return out


def run_generator(args) -> int:
    r = bench_generator(args.preset, args.device, args.frames, args.warmup, args.steps, args.threads, args.dtype,
                        batch=args.batch, graphs=not args.no_graphs, weights=args.weights)
    model = f"weights {r['weights']}" if r["weights"] else f"preset {r['preset']}"
    print(f"generator {model} on {r['device']} ({r['device_name']}), torch {r['torch']}, "
          f"{r['dtype']}, {r['threads']} CPU thread(s)")
    for name, n in r["parameters"].items():
        print(f"  parameters  {name:<15} {n / 1e6:8.2f} M")
    print(f"  per frame: 2 encoder steps + transformer step + {r['steps']} sampler steps x {r['branches']} "
          f"guidance branches, batch {r['batch']} session(s), synchronised, {r['frames']} frames after warm-up")
    e = r["eager"]
    print(f"  {'':<8} {'median':>8} {'p95':>8} {'max':>8}   ms per frame   frames/s at batch {r['batch']}")
    print(f"  {'eager':<8} {e['median_ms']:8.2f} {e['p95_ms']:8.2f} {e['max_ms']:8.2f}   wall clock     "
          f"{r['batch'] * 1000 / e['median_ms']:10.0f}   (encoders alone median {e['encoders_median_ms']:.2f} ms)")
    if r["device"].startswith("cpu"):
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
    from dystream.config import FRAMES_PER_SECOND

    best = min(e["median_ms"], g["median_ms"]) if g is not None else e["median_ms"]
    print(f"  real-time factor per session at {FRAMES_PER_SECOND} fps: "
          f"{1000 / FRAMES_PER_SECOND / best:.1f}x (median, best path)")
    return 0
