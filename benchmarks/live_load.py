"""Load test of `dystream serve` on loopback: N clients streaming both channels in real time.

    python benchmarks/live_load.py --clients 2 --seconds 300 [--resolution 256] [--json out.json]

Starts a server process (the bundled model; `--server-args` adds options), then N
WebSocket clients, each sending its avatar's voice (the bundled demo voice, looped) and a
partner (the other demo voice, looped) in 20 ms chunks on the wall clock, and reading
every frame. A frame is on time when it reaches its client within 60 ms of the arrival of
the last audio sample it needs (its due time: 20 ms of jitter allowance, plus one frame
period): the header's compute latency plus the delivery time (client clock minus the
server's `made_at`; one host, one monotonic clock). Reported per client: frames received
against the 25 per second of the run (after the first second), the share on time, the
latency percentiles, the runs of consecutive late frames (a hiccup is one run), the
server's resident memory at minute 1 and at the end, and the share of CPU time the
hypervisor gave to other machines during the run (steal time, on a virtual machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from importlib import resources

import numpy as np

ON_TIME_S = 0.060


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_jiffies() -> tuple[int, int]:
    """(stolen, total) CPU time since boot: time the hypervisor gave this machine's vCPUs to others."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return values[7] if len(values) > 7 else 0, sum(values[:8])


def _late_episodes(indices: np.ndarray, late: np.ndarray) -> dict:
    """Runs of consecutive late frames: a hiccup of the machine shows as one run, a steady
    shortfall as many."""
    order = np.argsort(indices)
    late = late[order].astype(int)
    starts = np.flatnonzero(np.diff(np.concatenate([[0], late])) == 1)
    ends = np.flatnonzero(np.diff(np.concatenate([late, [0]])) == -1)
    lengths = ends - starts + 1
    return {"count": int(len(lengths)), "longest_frames": int(lengths.max()) if len(lengths) else 0}


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def _client(url: str, index: int, seconds: float, voices: list[np.ndarray]) -> dict:
    from dystream.client import LiveClient, LiveClientFrame

    own, partner = voices[index % 2], voices[(index + 1) % 2]
    async with LiveClient.connect(url, seed=index) as client:
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        received: list[tuple[int, float, float]] = []   # index, compute s, delivery s

        async def read():
            while True:
                item = await client.receive()
                if isinstance(item, LiveClientFrame):
                    now = time.monotonic()
                    received.append((item.index, item.header["compute_ms"] / 1e3, now - item.header["made_at"]))

        reader = asyncio.create_task(read())
        chunk, sent = 320, 0
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                break
            due = int(elapsed * 16000)
            while sent + chunk <= due:
                k = sent % (len(own) - chunk)
                await client.send_audio("self", own[k:k + chunk])
                await client.send_audio("other", partner[k:k + chunk])
                sent += chunk
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        reader.cancel()
        del loop
    frames = np.array(received)
    counted = frames[frames[:, 0] >= 25] if len(frames) else frames       # after the first second
    expected = int((seconds - 1.0) * 25)
    total = counted[:, 1] + counted[:, 2] if len(counted) else np.zeros(1)
    return {"client": index, "frames": len(counted), "expected": expected,
            "share_on_time": float(np.mean(total <= ON_TIME_S)) * min(1.0, len(counted) / max(expected, 1)),
            "late_episodes": _late_episodes(counted[:, 0], total > ON_TIME_S) if len(counted) else None,
            "latency_ms": {q: float(np.percentile(total, q) * 1e3) for q in (50, 95, 99, 99.9)},
            "compute_ms": {q: float(np.percentile(counted[:, 1], q) * 1e3) for q in (50, 95, 99)} if len(counted) else None,
            "delivery_ms": {q: float(np.percentile(counted[:, 2], q) * 1e3) for q in (50, 95, 99)} if len(counted) else None}


async def _run(url: str, clients: int, seconds: float, pid: int) -> tuple[list[dict], dict]:
    import soundfile as sf

    voices = []
    for name in ("demo_self.wav", "demo_other.wav"):
        with resources.as_file(resources.files("dystream") / "assets" / name) as path:
            voices.append(sf.read(str(path), dtype="float32")[0])
    memory = {}

    async def watch():
        await asyncio.sleep(60.0)
        memory["minute_1_mb"] = _rss_mb(pid)

    watcher = asyncio.create_task(watch()) if seconds > 60 else None
    results = await asyncio.gather(*(_client(url, k, seconds, voices) for k in range(clients)))
    memory["end_mb"] = _rss_mb(pid)
    if watcher is not None:
        await watcher
    return list(results), memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--resolution", type=int, default=256, choices=[256, 512])
    parser.add_argument("--server-args", default="", help="more options for `dystream serve`")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    report = {"seconds": args.seconds, "resolution": args.resolution, "on_time_s": ON_TIME_S, "runs": []}
    for clients in args.clients:
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "dystream", "serve", "--port", str(port), "--max-sessions",
                                   str(clients), "--resolution", str(args.resolution), *args.server_args.split()],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    time.sleep(0.3)
            time.sleep(1.0)
            stolen, total = _cpu_jiffies()
            results, memory = asyncio.run(_run(f"ws://127.0.0.1:{port}/v1/session", clients, args.seconds, server.pid))
            stolen, total = (a - b for a, b in zip(_cpu_jiffies(), (stolen, total)))
        finally:
            server.terminate()
            server.wait(timeout=10)
        worst = min(r["share_on_time"] for r in results)
        run = {"clients": clients, "per_client": results, "server_rss": memory, "worst_share_on_time": worst,
               "cpu_stolen_share": stolen / max(total, 1)}
        report["runs"].append(run)
        growth = memory.get("end_mb", float("nan")) - memory.get("minute_1_mb", float("nan"))
        print(f"{clients} client(s), {args.seconds:.0f} s: worst share of frames on time {worst:.4f}; latency p99 "
              f"{max(r['latency_ms'][99] for r in results):.1f} ms; frames {[r['frames'] for r in results]} of "
              f"{results[0]['expected']}; server RSS minute 1 {memory.get('minute_1_mb', float('nan')):.0f} MB, "
              f"end {memory['end_mb']:.0f} MB (+{growth:.1f}); late episodes "
              f"{[r['late_episodes']['count'] for r in results]}; CPU time stolen by the host "
              f"{100 * run['cpu_stolen_share']:.1f}%", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
