"""Speed of the synthetic data engine: hours of conversation per core-hour, per stage.

    python benchmarks/bench_data.py [--hours 0.25] [--workers 1] [--engines flite,espeak]

Runs ``dystream data synth`` into a temporary folder (long test conversations
off, so the hours asked for are what is timed) and prints one table: per stage
(TTS incl. the engine processes, augmentation, motion rules, FLAC encoding and
shard writing) the seconds spent and the share, then hours per core-hour
(stage seconds summed over workers; each stage's wall time inside a
worker, engine processes included, so contention only makes it look slower) and,
with one worker, per CPU-hour (this process and its engine processes: what a
core that is not shared would do) and per wall-hour, and shard megabytes per
hour of conversation. Name the machine when quoting its numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time

from dystream.data.synth import SynthSettings, synthesize_dataset


def _cpu_seconds() -> float:
    """CPU of this process and of its finished children (flite runs, the espeak child once stopped)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _stop_engine_children() -> None:
    """End this process's espeak child so that its CPU time is counted."""
    import sys

    espeak = sys.modules.get("dystream.data.tts.espeak")
    child = getattr(espeak, "_Child", None) if espeak else None
    if child is not None and child.process is not None:
        child.process.stdin.close()
        child.process.wait()
        child.process = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=0.25)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--engines", default="flite,espeak")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    settings = SynthSettings(seed=args.seed, hours=args.hours, engines=args.engines.split(","),
                             long_test_conversations=0)
    with tempfile.TemporaryDirectory(prefix="dystream-bench-data-") as tmp:
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        manifest = synthesize_dataset(tmp, settings, workers=args.workers, progress=False)
        wall = time.perf_counter() - t0
        _stop_engine_children()
        cpu = _cpu_seconds() - cpu0
    run = manifest["last_run"]
    hours = run["hours_written"]
    stages = run["stage_seconds"]
    busy = sum(stages.values())
    size = sum(s["bytes"] for s in manifest["shards"]) / 1e6

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible; "
          f"engines {args.engines}; workers {args.workers}; {hours:.3f} h of conversation")
    print(f"{'stage':<10} {'seconds':>9} {'share':>7}")
    for name in ("tts", "augment", "motion", "write"):
        value = stages.get(name, 0.0)
        print(f"{name:<10} {value:>9.2f} {value / busy:>7.1%}")
    print(f"{'total':<10} {busy:>9.2f}")
    print(f"hours per core-hour (stage time): {hours / (busy / 3600):8.1f}")
    print(f"hours per core-hour (CPU time):   {hours / (cpu / 3600):8.1f}  (independent of other jobs; "
          f"workers=1 only)" if args.workers == 1 else "")
    print(f"hours per wall-hour:              {hours / (wall / 3600):8.1f}  ({wall:.1f} s wall)")
    print(f"shard size: {size / hours:.1f} MB per hour of conversation")


if __name__ == "__main__":
    main()
