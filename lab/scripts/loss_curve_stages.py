"""Draw one loss curve over training stages (a run, then runs continued from its weights).

Each stage is a run's log.jsonl and its batch size; the x axis counts training windows
seen, so stages with different batch sizes line up. A stage's validation loss is on its
own fixed batches (`--val-batches` batches of its batch size), so the validation curves
of two stages are two sets, not one: the plot says so.

    python scripts/loss_curve_stages.py docs/training/log_small_stage1.jsonl:64 \
        docs/training/log_small_stage2.jsonl:256 docs/training/log_small_stage3.jsonl:256 \
        docs/training/log_small_stage4.jsonl:256 docs/training/log_small_stage5.jsonl:256 \
        -o docs/training/loss_curve_small.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from dystream.training.trainer import TrainOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="+", metavar="LOG:BATCH",
                        help="log.jsonl of each stage, in order, with its batch size")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    parser.add_argument("--val-batches", type=int, default=TrainOptions.val_batches,
                        help="validation batches the runs used (default: the trainer's, %(default)s)")
    parser.add_argument("--title", default="generator training (small preset)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    offset = 0.0
    for i, spec in enumerate(args.stages):
        path, _, batch = spec.rpartition(":")
        if not path or not batch.isdigit():
            parser.error(f"{spec!r}: give LOG:BATCH, e.g. log.jsonl:64")
        batch = int(batch)
        records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        train = [(offset + r["step"] * batch / 1e6, r["loss"]) for r in records if r["kind"] == "train"]
        val = [(offset + r["step"] * batch / 1e6, r["val_loss"]) for r in records if r["kind"] == "val"]
        if not train:
            parser.error(f"{path}: no training records")
        steps = max(r["step"] for r in records if "step" in r)
        label = f"stage {i + 1}: batch {batch}, {steps:,} steps"
        # A run with the phone probe or the voice adversary logs their cross-entropies in the
        # training loss (not in validation).
        logged = {stat for r in records if r["kind"] == "train" for stat in r.get("last_step_stats", {})}
        terms = [name for stat, name in (("phone_ce", "phone-probe"), ("voice_ce", "voice-adversary")) if stat in logged]
        ax.plot(*zip(*train), lw=0.7, alpha=0.6, color=f"C{2 * i}",
                label=f"{label}, train" + (f" (with the {' and '.join(terms)} terms)" if terms else ""))
        if val:
            ax.plot(*zip(*val), "o-", ms=2.5, color=f"C{2 * i + 1}",
                    label=f"{label}, validation (EMA; its own {args.val_batches * batch} windows)")
        offset += steps * batch / 1e6
        if i + 1 < len(args.stages):
            ax.axvline(offset, color="0.4", lw=0.8, ls=":")
    ax.set_xlabel("training windows seen (millions)")
    ax.set_ylabel("loss (flow matching + probes)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(args.title)
    fig.tight_layout()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
