"""``dystream evaluate``: lip-sync, listening and drift scores on a data split.

    dystream evaluate --data DIR --split test [--checkpoint W.safetensors]
                      [--seeds 0 1 2] [--max-hours H] -o report.json

Scores the ground truth, the RMS baseline and the generator side by side, prints
a table with the acceptance thresholds and writes everything to a JSON report.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from dystream.errors import InputError, MissingDependencyError

# (key in scores, row label, format)
_ROWS = [
    ("jaw_open_correlation", "jawOpen correlation (self speaking)", "{:.3f}"),
    ("bilabial_closure_rate", "lip closure on bilabials (rate)", "{:.3f}"),
    ("envelope_mouth_offset_frames", "audio/mouth offset (frames, + = mouth leads)", "{:+.0f}"),
    ("listening_nods_per_minute", "listening nods per minute", "{:.2f}"),
    ("median_nod_delay_s", "median nod delay after partner phrase end (s)", "{:.3f}"),
    ("pose_drift_degrees", "pose drift, last minute of >= 5 min (deg)", "{:.2f}"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset directory (from `dystream data synth`)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--checkpoint", default=None,
                        help="generator weights (.safetensors); default: the bundled weights")
    parser.add_argument("--no-model", action="store_true",
                        help="score only the ground truth and the RMS baseline")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="sampling seeds of the generator; scores are averaged over them")
    parser.add_argument("--max-hours", type=float, default=None,
                        help="stop after this many hours of conversation (in shard order)")
    parser.add_argument("--device", default="cpu", help="torch device of the generator")
    from dystream.cli_options import add_sampling_options

    add_sampling_options(parser)
    parser.add_argument("-o", "--output", default=None, help="write the full report as JSON here")
    parser.set_defaults(func=run)


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def format_table(report: dict[str, Any]) -> str:
    """metric | ground truth | RMS baseline | model | threshold (pass/fail of each column)."""
    columns = [("ground truth", "ground_truth"), ("RMS baseline", "rms_baseline"), ("model", "model")]
    columns = [(title, key) for title, key in columns if key in report]
    header = ["metric", *(title for title, _ in columns), "threshold (model)"]
    lines = [header]
    for key, label, fmt in _ROWS:
        row = [label]
        for _, col in columns:
            entry = report[col]
            check = entry["vs_ground_truth"]["checks"].get(key)
            mark = "" if check is None else (" ok" if check else " x")
            row.append(_cell(entry["scores"][key], fmt) + (mark if col != "ground_truth" else ""))
        row.append(report["thresholds"][key])
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    out = []
    for n, r in enumerate(lines):
        out.append(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
        if n == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def _json_safe(value: Any) -> Any:
    """NaN (a score undefined on this data) becomes null: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run(args: argparse.Namespace) -> int:
    from dystream.data.schema import iter_conversations, shard_paths
    from dystream.evaluation.core import evaluate_many
    from dystream.evaluation.predictors import generator_predictor, rms_baseline_predictor
    from dystream.cli_options import sampling_from
    from dystream.generator.guidance import DEFAULT_GUIDANCE, DEFAULT_POSE_GUIDANCE

    sampling = sampling_from(args)  # a bad value fails before any work

    try:
        shards = shard_paths(args.data, args.split)
    except FileNotFoundError as exc:
        raise InputError(f"{exc}; make data with `dystream data synth --hours 1 -o {args.data}`") from None
    if not shards:
        raise InputError(f"no shards in {Path(args.data) / args.split}; is --data a dataset "
                         f"made by `dystream data synth`?")
    if args.max_hours is not None and args.max_hours <= 0:
        raise InputError("--max-hours must be positive")

    predictors = {"rms_baseline": rms_baseline_predictor}
    if not args.no_model:
        try:
            predictors["model"] = generator_predictor(args.checkpoint, device=args.device, sampling=sampling)
        except MissingDependencyError as exc:
            if args.checkpoint is not None:
                raise
            print(f"note: no model column: {exc}; here pass --checkpoint PATH", file=sys.stderr)

    from tqdm import tqdm

    bar = tqdm(desc=f"evaluating {args.split}", unit="conv", file=sys.stderr)
    report = evaluate_many(iter_conversations(args.data, args.split), predictors,
                           seeds=args.seeds, max_hours=args.max_hours,
                           progress=lambda conv: bar.update(1))
    bar.close()
    report["settings"] = {"data": str(args.data), "split": args.split,
                          "checkpoint": args.checkpoint, "steps": args.steps,
                          "guidance": {**DEFAULT_GUIDANCE, **(sampling.guidance or {})},
                          "pose_guidance": (DEFAULT_POSE_GUIDANCE if sampling.pose_guidance is None
                                            else sampling.pose_guidance),
                          "seeds": args.seeds, "max_hours": args.max_hours}
    data = report["data"]
    print(f"{data['conversations']} conversations, {data['hours']:.2f} h, "
          f"{data['long_conversations']} of >= 5 min; seeds {data['seeds']}")
    print(format_table(report))
    if args.output:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_json_safe(report), indent=2))
        print(f"report written to {path}")
    return 0
