"""``dystream train average``: the weighted mean of generator weights files.

Averaging the weights of runs that share an architecture and a lineage (e.g. one run's
export and the same run trained on) is "weight averaging": the mean often lies deeper in
the loss basin than either end, and it costs no training (lab/LOG.md measures it on the
bundled weights). Every file must hold the same config; each floating tensor
(buffers such as the motion statistics too, which one lineage shares) is averaged in
float64 and the result is written like a trained export (fp16 by default) with a record
of its sources.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path

import torch

from dystream.errors import InputError


def configure(what: argparse._SubParsersAction) -> None:
    avg = what.add_parser(
        "average", help="average several generator weights files (weight averaging, no training)",
        description="Write the element-wise weighted mean of generator weights files that share one "
                    "configuration (same preset, options and lookahead), e.g. a run's export and the same "
                    "run trained on. No data and no GPU needed.")
    avg.add_argument("inputs", nargs="+", metavar="WEIGHTS", help="two or more .safetensors generator weights files")
    avg.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the averaged weights")
    avg.add_argument("--weights", type=float, nargs="+", default=None, metavar="W",
                     help="one positive weight per input, normalised to sum 1 (default: equal weights)")
    avg.add_argument("--modules", nargs="+", default=None, metavar="NAME",
                     help="average only these top-level modules of the generator (e.g. self_encoder "
                          "other_encoder); every other tensor is the first file's (default: all)")
    avg.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                     help="dtype of the written weights (default float16, as `train generator` exports)")
    avg.set_defaults(func=run)


def average_generators(paths: list[str | Path], weights: list[float] | None = None,
                       modules: list[str] | None = None):
    """(model, info): a Generator holding the weighted mean of the files' tensors, and
    the record of what was averaged. With ``modules``, only the tensors of those top-level
    modules (``self_encoder``, ``transformer``, ...) are averaged and the rest are the
    first file's. Raises InputError for fewer than two files, bad weights, unknown
    modules or files whose configs or tensors differ in kind."""
    from dystream.generator.weights import load_generator

    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise InputError("averaging needs at least two weights files")
    if weights is None:
        weights = [1.0] * len(paths)
    if len(weights) != len(paths):
        raise InputError(f"--weights has {len(weights)} values for {len(paths)} files: give one per file")
    if any(not (w > 0) for w in weights):
        raise InputError(f"--weights must all be positive, got {weights}")
    total = float(sum(weights))
    weights = [w / total for w in weights]

    models = [load_generator(p, inference=False) for p in paths]  # float32 throughout, as trained
    first = models[0]
    for path, model in zip(paths[1:], models[1:]):
        if model.cfg != first.cfg:
            a, b = dataclasses.asdict(first.cfg), dataclasses.asdict(model.cfg)
            fields = [name for name in a if a[name] != b.get(name)]
            raise InputError(f"{path} has another configuration than {paths[0]} (fields {', '.join(fields)}): "
                             "only weights of the same architecture and options can be averaged")
    states = [m.state_dict() for m in models]
    if modules is not None:
        known = sorted({name.split(".")[0] for name in states[0]})
        unknown = [m for m in modules if m not in known]
        if unknown or not modules:
            raise InputError(f"--modules {' '.join(unknown) or '(none)'}: not a module of the generator; "
                             f"choose from {', '.join(known)}")
    mean = {}
    for name, tensor in states[0].items():
        if modules is not None and name.split(".")[0] not in modules:
            mean[name] = tensor                         # the first file's
        elif tensor.is_floating_point():
            mean[name] = sum(w * s[name].double() for w, s in zip(weights, states)).to(tensor.dtype)
        else:
            if any(not torch.equal(s[name], tensor) for s in states[1:]):
                raise InputError(f"{name} is an integer tensor that differs between the files; cannot average it")
            mean[name] = tensor
    first.load_state_dict(mean)
    sources = []
    for path, w, model in zip(paths, weights, models):
        info = model.weights_info
        sources.append({"file": path.name, "weight": round(w, 6), "steps": info.get("steps"),
                        "init_weights": Path(info["init_weights"]).name if info.get("init_weights") else None,
                        "command": info.get("command")})
    info = {"preset": first.weights_info.get("preset", "small"), "averaged_from": sources}
    if modules is not None:
        info["averaged_modules"] = sorted(modules)
    return first, info


def run(args: argparse.Namespace) -> int:
    from dystream.generator.weights import save_weights

    model, info = average_generators(args.inputs, args.weights, args.modules)
    from dystream.training.record import portable

    words = ["dystream", "train", "average", *map(portable, args.inputs), "-o", portable(args.output)]
    if args.weights:
        words += ["--weights", *(str(w) for w in args.weights)]
    if args.modules:
        words += ["--modules", *args.modules]
    if args.dtype != "float16":
        words += ["--dtype", args.dtype]
    info["command"] = " ".join(shlex.quote(w) for w in words)
    dtype = torch.float16 if args.dtype == "float16" else None
    path = save_weights(model, args.output, info, dtype=dtype)
    parts = ", ".join(f"{s['file']} x {s['weight']:.3g}" for s in info["averaged_from"])
    print(f"averaged {parts} -> {path}")
    return 0
