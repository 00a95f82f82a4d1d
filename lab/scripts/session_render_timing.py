"""Probe: per-frame wall time of the streaming session with rendering (the bundled model,
256 px, the bundled photo and demo voice fed 40 ms at a time as fast as it goes), at 1 and 2
torch threads, against the step and the decode alone in the same process.

    python lab/scripts/session_render_timing.py [--frames 500]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def percentiles(values):
    a = np.array(values) * 1e3
    return {"median": round(float(np.median(a)), 2), "p95": round(float(np.percentile(a, 95)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    args = parser.parse_args()
    import soundfile as sf
    from importlib import resources

    from dystream.pipeline import Pipeline
    from dystream.video import bundled_photo

    pipeline = Pipeline.load(device="cpu", resolution=256)
    avatar = pipeline.prepare(bundled_photo())
    with resources.as_file(resources.files("dystream") / "assets" / "demo_self.wav") as path:
        voice = sf.read(str(path), dtype="float32")[0]
    report = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for render in (False, True):
            session = pipeline.session(avatar, seed=0, render=render)
            times, k = [], 0
            while len(times) < args.frames + 25:
                chunk = voice[(k * 640) % (len(voice) - 640):][:640]
                k += 1
                t = time.perf_counter()
                made = session.feed("self", chunk) + session.feed("other", np.zeros(640, np.float32))
                if made:
                    times.append((time.perf_counter() - t) / len(made))
            report[f"threads_{threads}_{'render' if render else 'motion'}"] = percentiles(times[25:])
        print(json.dumps(report))


if __name__ == "__main__":
    main()
