"""Probe: where a live frame's compute latency goes in `dystream serve` under real-time clients.

    python lab/scripts/live_server_probe.py --decode-threads 1 2 --seconds 60 --json out.json

Runs the server (the bundled model, 256 px) in a child process with the engine's stages
timed (wake: the last needed sample's arrival to the tick's start; step; decode; JPEG and
delivery), drives it with benchmarks/live_load.py's real-time clients, and reports each
stage's percentiles and the share of frames on time, per decode thread count.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, signal, sys, time
import numpy as np
from dystream.live.engine import Engine
from dystream.live.server import serve
from dystream.pipeline import Pipeline

port, threads, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
engine = Engine(Pipeline.load(device="cpu", resolution=256), capacity=1, decode_threads=threads)
times = {"wake": [], "step": [], "decode": [], "deliver": [], "tick": []}
step, render = engine._step, engine._render

def timed_step(audio_rows, count, due):
    t = time.monotonic(); out = step(audio_rows, count, due); times["step"].append(time.monotonic() - t); return out

def timed_render(motion, due, own, arrivals):
    t = time.monotonic()
    times["wake"].append(t - times["step"][-1] - max(arrivals[r] for r in due) - 0.0)
    made = render(motion, due, own, arrivals)
    times["render"] = times.get("render", []); times["render"].append(time.monotonic() - t)
    return made

engine._step, engine._render = timed_step, timed_render
import gc
gc_started = {}

def on_gc(phase, info):
    if phase == "start":
        gc_started["t"] = time.monotonic()
    elif info["generation"] == 2:
        times.setdefault("gc_gen2", []).append(time.monotonic() - gc_started["t"])
    else:
        times.setdefault("gc_young", []).append(time.monotonic() - gc_started["t"])

gc.callbacks.append(on_gc)

def dump(*_):
    json.dump({k: v for k, v in times.items()}, open(out, "w")); sys.exit(0)

signal.signal(signal.SIGTERM, dump)
serve(engine, host="127.0.0.1", port=port)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decode-threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("live_load", ROOT / "benchmarks" / "live_load.py")
    load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load)
    import asyncio

    import numpy as np

    report = []
    for threads in args.decode_threads:
        port, out = load._free_port(), f"/tmp/live_probe_{threads}.json"
        server = subprocess.Popen([sys.executable, "-c", CHILD, str(port), str(threads), out], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
        import socket

        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.3)
        time.sleep(1.0)
        results, _ = asyncio.run(load._run(f"ws://127.0.0.1:{port}/v1/session", 1, args.seconds, server.pid))
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
        times = json.load(open(out))
        stages = {k: {q: round(float(np.percentile(np.array(v[25:] if k[:2] != "gc" else v) * 1e3, q)), 2)
                      for q in (50, 95, 99, 100)} | {"n": len(v)} for k, v in times.items() if len(v) > 0}
        row = {"decode_threads": threads, "share_on_time": results[0]["share_on_time"],
               "latency_ms": results[0]["latency_ms"], "compute_ms": results[0]["compute_ms"],
               "delivery_ms": results[0]["delivery_ms"], "stages_ms": stages}
        print(json.dumps(row))
        report.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
