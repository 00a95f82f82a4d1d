"""Summarise the runs of `scripts/gpu_multi.sh` (compare and scaling) into a JSON report,
an overlay PNG of the loss curves and a markdown table.

    python scripts/multi_gpu_report.py RUNS_DIR [RUNS_DIR ...] -o docs/training

RUNS_DIR: unpacked `multi_compare.tar.gz` / `multi_scaling.tar.gz` (folders of run
directories, each with log.jsonl and training_record.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

COMPARE = {  # run directory -> label in the plot
    "gpu1_seed0": "1 GPU, seed 0",
    "gpu1_seed1": "1 GPU, seed 1",
    "gpu2_seed0": "2 GPUs (NCCL), seed 0",
    "resume_2to1": "2-GPU checkpoint resumed on 1 GPU",
    "resume_2to4": "2-GPU checkpoint resumed on 4 processes (gloo, CPU)",
}
WARMUP_INTERVAL_STEPS = 100  # throughput is read after the first steps (allocation, autotuning)


def read_run(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    record = json.loads((run / "training_record.json").read_text())
    train = [r for r in rows if r["kind"] == "train"]
    return {
        "record": {k: record[k] for k in ("preset", "parameters", "device", "world_size", "batch_size", "steps",
                                          "seed", "train_wall_seconds", "final_val_loss")},
        "train": [(r["step"], r["loss"]) for r in train],
        "val": [(r["step"], r["val_loss"]) for r in rows if r["kind"] == "val"],
        "samples_per_s": [(r["step"], r["samples_per_s"]) for r in train],
    }


def mean_loss(run: dict, first: int, last: int) -> float:
    losses = [loss for step, loss in run["train"] if first < step <= last]
    return sum(losses) / len(losses)


def median_rate(run: dict) -> float:
    return statistics.median(rate for step, rate in run["samples_per_s"] if step > WARMUP_INTERVAL_STEPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    runs = {p.name: read_run(p) for root in args.runs for p in sorted(root.iterdir())
            if (p / "log.jsonl").is_file() and (p / "training_record.json").is_file()}
    report: dict = {"runs": runs}

    if all(name in runs for name in COMPARE):
        steps = runs["gpu2_seed0"]["record"]["steps"]
        window = (steps - 200, steps)
        last200 = {name: mean_loss(runs[name], *window) for name in ("gpu1_seed0", "gpu1_seed1", "gpu2_seed0")}
        one = [last200["gpu1_seed0"], last200["gpu1_seed1"]]
        report["compare"] = {
            "last_200_steps": list(window), "mean_train_loss": last200,
            "two_vs_one_gpu_same_seed": last200["gpu2_seed0"] / last200["gpu1_seed0"] - 1,
            "two_vs_one_gpu_mean_of_seeds": last200["gpu2_seed0"] / statistics.mean(one) - 1,
            "seed_spread_one_gpu": abs(one[0] / one[1] - 1),
            "after_resume_first_interval": {name: next(row for row in runs[name]["train"] if row[0] > steps)
                                            for name in ("resume_2to1", "resume_2to4")},
        }
        print(json.dumps(report["compare"], indent=2))
        plot(runs, steps, args.output / "multi_gpu_loss.png")

    scaling = sorted(name for name in runs if name.startswith("scale_"))
    if scaling:
        table = []
        for name in scaling:
            record = runs[name]["record"]
            table.append({"run": name, "preset": record["preset"], "parameters": record["parameters"],
                          "gpus": record["world_size"], "global_batch": record["batch_size"],
                          "samples_per_s": round(median_rate(runs[name]))})
        report["scaling"] = table
        base = {row["preset"]: row["samples_per_s"] for row in table if row["gpus"] == 1}
        print("| preset | GPUs | global batch (per GPU) | samples/s | vs 1 GPU |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for row in sorted(table, key=lambda r: (r["parameters"], r["gpus"], r["global_batch"])):
            print(f"| {row['preset']} | {row['gpus']} | {row['global_batch']} ({row['global_batch'] // row['gpus']}) | "
                  f"{row['samples_per_s']:,} | {row['samples_per_s'] / base[row['preset']]:.2f}x |")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "multi_gpu.json").write_text(json.dumps(report, indent=1) + "\n")


def plot(runs: dict, steps: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (full, tail) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    for name, label in COMPARE.items():
        run = runs[name]
        style = dict(lw=1.0, label=label)
        if name.startswith("resume"):
            style.update(lw=1.6)
            train = [(s, v) for s, v in run["train"] if s > steps]
        else:
            train = run["train"]
        for ax in (full, tail):
            line, = ax.plot(*zip(*train), **style)
            val = [(s, v) for s, v in run["val"] if not name.startswith("resume") or s > steps]
            if val:
                ax.plot(*zip(*val), "o", ms=4, color=line.get_color())
    full.set_yscale("log")
    full.set_title("training loss (10-step means); dots: validation loss (EMA)")
    tail.set_xlim(steps - 400, max(s for s, _ in runs["resume_2to1"]["train"]) + 10)
    tail.set_ylim(0.055, 0.085)
    tail.axvline(steps, color="gray", lw=0.8, ls="--")
    tail.set_title(f"last 400 steps and the resumed runs (after step {steps})")
    for ax in (full, tail):
        ax.set_xlabel("optimizer step (global batch 64)")
        ax.grid(True, alpha=0.3)
    full.set_ylabel("flow-matching loss")
    tail.legend(fontsize=8)
    fig.suptitle("small preset, 7.8 h synthetic data: 2 x H200 (DDP, NCCL) vs 1 x H200 at the same global batch")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
