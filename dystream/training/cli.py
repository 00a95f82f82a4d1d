"""``dystream train generator``: the command that trains the audio-to-motion generator.

Runs alone or under ``torchrun --nproc_per_node=N -m dystream train generator ...``.
All file handling lives here; the trainer and the objective only see tensors.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dystream.errors import InputError
from dystream.training import average, ddp
from dystream.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from dystream.training.dataset import (ANCHOR_STRATEGIES, WindowBank, load_conversations, motion_statistics,
                                       relative_motion_statistics)
from dystream.training.recipe import TrainingRecipe
from dystream.training.record import command_line, portable
from dystream.training.trainer import SCHEDULES, Trainer, TrainOptions, plot_loss_curve

log = logging.getLogger("dystream.train")

EXPORT_NAME = "generator_ema.safetensors"
LOSS_CURVE_NAME = "loss_curve.png"
# Architecture fields that --init-weights may change: the lookahead, to a larger value (the front
# projection's weights on the new lookahead frames start at zero), and the audio encoders' depth,
# to a larger value (new blocks start as identities). Training then starts from the same function.
GROWABLE = frozenset({"self_lookahead_ms", "other_lookahead_ms", "audio_layers"})


def configure(parser: argparse.ArgumentParser) -> None:
    from dystream.generator.config import PRESETS

    what = parser.add_subparsers(dest="what", metavar="WHAT")
    gen = what.add_parser(
        "generator", help="train the audio-to-motion generator on conversation shards",
        description="Train the generator on a dataset made by `dystream data synth` (or from video). "
                    "Runs alone or under `torchrun --nproc_per_node=N -m dystream train generator ...`; "
                    "--batch-size is the global batch, split evenly across processes.")
    gen.add_argument("--data", required=True, metavar="DIR", help="dataset directory (with train/ and val/ shards)")
    gen.add_argument("-o", "--output", required=True, metavar="RUN_DIR",
                     help="run directory: checkpoint.pt, log.jsonl, loss_curve.png, exported weights")
    gen.add_argument("--preset", default="small", choices=sorted(PRESETS),
                     help="network preset: small (the bundled model's architecture) or large (default small)")
    gen.add_argument("--model-option", action="append", default=[], metavar="FIELD=VALUE",
                     help="replace one field of the preset's GeneratorConfig (repeatable), e.g. layers=2")
    gen.add_argument("--recipe-option", action="append", default=[], metavar="FIELD=VALUE",
                     help="replace one field of the training recipe (repeatable; dystream.training.recipe."
                          "TrainingRecipe, default: the bundled weights' recipe), e.g. phone_weight=0")
    gen.add_argument("--lookahead-ms", type=int, default=None,
                     help="audio lookahead of both audio encoders in ms, 0-120 in steps of 10 (default: the "
                          "preset's; with --init-weights: the file's, which this may lengthen)")
    gen.add_argument("--batch-size", type=int, default=64, help="global batch size, split across processes (default 64)")
    gen.add_argument("--lr", type=float, default=3e-4, help="peak learning rate of AdamW (default 3e-4)")
    gen.add_argument("--warmup-steps", type=int, default=1000, help="linear warmup steps (default 1000)")
    gen.add_argument("--lr-schedule", choices=SCHEDULES, default="cosine",
                     help="after warmup: cosine decay to 0.1 x lr at --max-steps, or constant (default cosine)")
    gen.add_argument("--max-steps", type=int, default=100_000, help="stop after this many optimizer steps")
    gen.add_argument("--max-minutes", type=float, default=None, help="stop after this many minutes of this run")
    gen.add_argument("--until-plateau", action="store_true",
                     help="stop when the validation loss improved by less than 1%% over the last 20%% of steps")
    gen.add_argument("--val-every", type=int, default=500, help="validate every N steps (default 500)")
    gen.add_argument("--val-batches", type=int, default=8, help="fixed validation batches per validation (default 8)")
    gen.add_argument("--ckpt-every", type=int, default=1000, help="save a checkpoint every N steps (default 1000)")
    gen.add_argument("--log-every", type=int, default=10, help="log the mean training loss every N steps (default 10)")
    gen.add_argument("--anchor-strategy", choices=ANCHOR_STRATEGIES, default="last-weighted",
                     help="training anchor: none, random (any frame of the window) or last-weighted "
                          "(one of the last 10 frames, newer likelier; default)")
    gen.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    gen.add_argument("--device", default=None, help="cpu, cuda or cuda:K (default: cuda when available)")
    gen.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                     help="continue from a checkpoint (default: RUN_DIR/checkpoint.pt); exact on the same "
                          "number of processes")
    gen.add_argument("--init-weights", default=None, metavar="WEIGHTS",
                     help="start from trained generator weights (a .safetensors file, e.g. the bundled "
                          "dystream/weights/generator-small.safetensors) instead of random ones: fine-tuning, "
                          "e.g. on shards made from real video. The architecture and the motion statistics "
                          "come from the file (--preset is not used); --lookahead-ms or --model-option "
                          "self_lookahead_ms= / other_lookahead_ms= may lengthen its lookahead and "
                          "--model-option audio_layers= deepen its audio encoders (the new weights start so "
                          "that training starts from the same function). The recipe's auxiliary heads, the "
                          "optimizer, schedule and EMA start afresh")
    gen.add_argument("--export", default=None, metavar="PATH",
                     help=f"where to write the EMA weights (default RUN_DIR/{EXPORT_NAME})")
    gen.add_argument("--export-dtype", choices=("float16", "float32"), default="float16",
                     help="dtype of the exported weights (default float16; the validation loss of the "
                          "fp16-rounded EMA is recorded next to the fp32 one)")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar (logs still written)")
    gen.set_defaults(func=run, command_parser=gen)
    average.configure(what)


# -- settings --------------------------------------------------------------------------------

def _parse_pairs(pairs: list[str], flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InputError(f"{flag} {pair!r}: write it as FIELD=VALUE")
        out[name.strip()] = value.strip()
    return out


def _parse_like(current: Any, text: str, name: str, flag: str) -> Any:
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if isinstance(current, (int, float, str)):
            return type(current)(text)
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"{flag} {name}={text}: expected a value like {current!r}") from exc


def apply_options(config: Any, pairs: dict[str, str], flag: str) -> Any:
    """A copy of a config dataclass with FIELD=VALUE strings parsed to each field's type."""
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(pairs) - names)
    if unknown:
        raise InputError(f"{flag} {unknown[0]}: no such field; fields are {', '.join(sorted(names))}")
    return dataclasses.replace(config, **{name: _parse_like(getattr(config, name), text, name, flag)
                                          for name, text in pairs.items()})


@dataclass
class _Setup:
    """What a run trains: the architecture, the recipe, and where its weights start."""

    cfg: Any
    recipe: TrainingRecipe
    preset: str | None
    init_state: dict[str, torch.Tensor] | None = None
    init_info: dict[str, Any] | None = None
    resume_state: dict[str, Any] | None = None


def _setup(args: argparse.Namespace, run_dir: Path) -> _Setup:
    from dystream.generator.config import GeneratorConfig, migrate_config, preset
    from dystream.generator.weights import read_weights

    if args.init_weights and args.resume is not None:
        raise InputError("--init-weights starts a new run from trained weights and --resume continues a "
                         "run from its checkpoint: give one of them")
    options = _parse_pairs(args.model_option, "--model-option")
    if args.lookahead_ms is not None:
        options.update(self_lookahead_ms=str(args.lookahead_ms), other_lookahead_ms=str(args.lookahead_ms))
    recipe = apply_options(TrainingRecipe(), _parse_pairs(args.recipe_option, "--recipe-option"), "--recipe-option")
    if args.resume is not None:
        state = load_checkpoint(args.resume or run_dir / CHECKPOINT_NAME, map_location="cpu")
        saved = state["record"]
        if "recipe" not in saved:
            raise InputError("this checkpoint was written by an older dystream and cannot be resumed; start "
                             "a new run from its exported weights with --init-weights")
        if state["world_size"] != int(os.environ.get("WORLD_SIZE", "1")):
            log.warning("checkpoint written by %d process(es): training continues, but the batches differ "
                        "from an uninterrupted run", state["world_size"])
        cfg = GeneratorConfig(**migrate_config(saved["generator_config"]))
        return _Setup(cfg, TrainingRecipe(**saved["recipe"]), saved.get("preset"), resume_state=state)
    if args.init_weights:
        path = Path(args.init_weights)
        if not path.is_file():
            raise InputError(f"--init-weights {path}: no such file")
        cfg, state, info = read_weights(path)
        other = sorted(set(options) - GROWABLE)
        if other:
            raise InputError(f"--init-weights: the architecture comes from {path.name}; only "
                             f"{', '.join(sorted(GROWABLE))} may change (given: {', '.join(other)})")
        return _Setup(apply_options(cfg, options, "--model-option"), recipe, None, state, info)
    return _Setup(apply_options(preset(args.preset), options, "--model-option"), recipe, args.preset)


def _load_initial_weights(network, state: dict[str, torch.Tensor], path: str) -> None:
    """The file's weights (and motion statistics) into ``network``, grown where its lookahead
    is longer or its audio encoders deeper than the file's."""
    try:
        state = network.deepen_audio_encoders(network.widen_lookahead(state))
        network.load_state_dict(state)
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"--init-weights {path} does not fit the model it describes ({exc})") from None


# -- the command ------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    ctx = ddp.setup(args.device)
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the few fp32 matmuls outside bf16 autocast
        torch.backends.cudnn.allow_tf32 = True
    logging.basicConfig(level=logging.INFO if ctx.is_main else logging.WARNING,
                        format=f"%(asctime)s [rank {ctx.rank}] %(message)s", datefmt="%H:%M:%S")
    try:
        return _run(args, ctx)
    finally:
        ddp.teardown(ctx)


def _run(args: argparse.Namespace, ctx: ddp.DistributedContext) -> int:
    from dystream.generator.model import Generator
    from dystream.training.recipe import GeneratorObjective

    run_dir = Path(args.output)
    setup = _setup(args, run_dir)
    torch.manual_seed(args.seed)  # initial weights follow --seed (DDP copies rank 0's to the others)
    objective = GeneratorObjective(Generator(setup.cfg), setup.recipe)
    network = objective.network
    if setup.init_state is not None:
        _load_initial_weights(network, setup.init_state, args.init_weights)
        log.info("initial weights from %s (%s steps of training)", args.init_weights, setup.init_info.get("steps", "?"))
    log.info("generator: %.2fM parameters, window %d frames", network.parameter_counts()["total"] / 1e6,
             objective.window_frames)

    loaded = time.monotonic()
    train_conversations = load_conversations(args.data, "train")
    try:
        val_conversations = load_conversations(args.data, "val")
    except InputError:
        val_conversations = []
    if args.until_plateau and not val_conversations:
        raise InputError(f"--until-plateau needs validation data, but {Path(args.data) / 'val'} has no shards")
    left, right = objective.audio_context()
    train_bank = WindowBank(train_conversations, objective.window_frames, left, right, ctx.device)
    val_bank = (WindowBank(val_conversations, objective.window_frames, left, right, ctx.device)
                if val_conversations else None)
    if setup.init_state is None and setup.resume_state is None:
        # Fine-tuning keeps the statistics the initial weights were trained with.
        mean, std = motion_statistics(train_conversations)
        if setup.cfg.pose_relative:
            mean, std = relative_motion_statistics(train_bank, network.relative_mask.cpu().numpy() > 0,
                                                   args.anchor_strategy, mean, std, seed=args.seed)
        network.set_motion_stats(torch.from_numpy(mean), torch.from_numpy(std))
    del train_conversations, val_conversations
    log.info("data: %.2f h train (%d conversations), %s val, loaded in %.1f s on %s",
             train_bank.hours, train_bank.num_conversations,
             f"{val_bank.hours:.2f} h" if val_bank else "no", time.monotonic() - loaded, ctx.device)

    options = TrainOptions(
        batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps, schedule=args.lr_schedule,
        max_steps=args.max_steps, max_minutes=args.max_minutes, until_plateau=args.until_plateau,
        val_every=args.val_every, val_batches=args.val_batches, ckpt_every=args.ckpt_every,
        log_every=args.log_every, anchor_strategy=args.anchor_strategy, seed=args.seed,
        progress=not args.no_progress)
    record = _record(args, ctx, setup, network, train_bank)
    trainer = Trainer(objective, train_bank, val_bank, options, run_dir, ctx, record=record)
    if setup.resume_state is not None:
        trainer.load_state_dict(setup.resume_state)
        log.info("resumed at step %d", trainer.step)
        setup.resume_state = None
    result = trainer.fit()
    if ctx.is_main:
        _export(args, trainer, result, val_bank, run_dir, ctx)
    ddp.barrier(ctx)
    return 0


def _record(args, ctx, setup: _Setup, network, train_bank: WindowBank) -> dict[str, Any]:
    """What the run is, for its checkpoint (resume rebuilds the model from it) and its export."""
    record = {
        "data": portable(str(args.data)), "train_hours": round(train_bank.hours, 4), "preset": setup.preset,
        "generator_config": dataclasses.asdict(setup.cfg), "recipe": dataclasses.asdict(setup.recipe),
        "parameters": network.parameter_counts()["total"], "command": command_line(args, ctx.world_size),
        "device": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
    }
    if setup.init_state is not None:
        record.update(init_weights=Path(args.init_weights).name, init_weights_steps=setup.init_info.get("steps"))
    elif setup.resume_state is not None and "init_weights" in setup.resume_state["record"]:
        saved = setup.resume_state["record"]   # a resumed fine-tuning run stays one
        record.update(init_weights=saved["init_weights"], init_weights_steps=saved.get("init_weights_steps"),
                      command=saved["command"])
    return record


def _export(args, trainer: Trainer, result, val_bank: WindowBank | None, run_dir: Path, ctx) -> None:
    """Loss curve, the EMA network's weights with the run's record, and training_record.json."""
    from dystream.generator.weights import save_weights

    curve = plot_loss_curve(run_dir, run_dir / LOSS_CURVE_NAME)
    export = Path(args.export) if args.export else run_dir / EXPORT_NAME
    options = trainer.options
    info = {
        **{k: v for k, v in trainer.record.items() if k != "generator_config"},
        "steps": result.step, "batch_size": options.batch_size, "world_size": ctx.world_size,
        "anchor_strategy": options.anchor_strategy, "seed": options.seed,
        "stopped_because": result.stopped_because, "train_wall_seconds": round(result.train_seconds, 1),
        ("gpu_seconds" if ctx.device.type == "cuda" else "cpu_process_seconds"):
            round(result.train_seconds * ctx.world_size, 1),
        "final_val_loss": result.val_history[-1][1] if result.val_history else None,
        "weights": "EMA (decay %g)" % options.ema_decay, "export_dtype": args.export_dtype,
    }
    export_dtype = getattr(torch, args.export_dtype)
    if val_bank is not None:
        # Is the export dtype enough? Validate the EMA rounded to it, beside the fp32 EMA.
        rounded = copy.deepcopy(trainer.ema)
        with torch.no_grad():
            for param in rounded.network.parameters():
                param.copy_(param.to(export_dtype).float())
        info["final_val_loss_export_dtype"] = trainer.validation_loss(rounded)
        info["final_val_loss_fp32"] = trainer.validation_loss(trainer.ema)
    save_weights(trainer.ema.network, export, info, dtype=export_dtype)
    (run_dir / "training_record.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("stopped at step %d (%s) after %.1f min; EMA weights -> %s; loss curve -> %s",
             result.step, result.stopped_because, result.train_seconds / 60, export, curve)
