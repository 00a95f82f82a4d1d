"""``dystream train generator``: the command that trains the audio-to-motion generator.

Runs alone or under ``torchrun --nproc_per_node=N -m dystream train generator ...``.
All file handling lives here; the trainer and the model only see tensors.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from dystream.errors import InputError, MissingDependencyError
from dystream.training import average, ddp
from dystream.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from dystream.training.dataset import (ANCHOR_STRATEGIES, WindowBank, load_conversations, motion_statistics,
                                       relative_motion_statistics)
from dystream.training.trainer import SCHEDULES, Trainer, TrainOptions, plot_loss_curve

log = logging.getLogger("dystream.train")

EXPORT_NAME = "generator_ema.safetensors"
LOSS_CURVE_NAME = "loss_curve.png"


def configure(parser: argparse.ArgumentParser) -> None:
    what = parser.add_subparsers(dest="what", metavar="WHAT")
    gen = what.add_parser(
        "generator", help="train the audio-to-motion generator on conversation shards",
        description="Train the generator on a dataset made by `dystream data synth` (or from video). "
                    "Runs alone or under `torchrun --nproc_per_node=N -m dystream train generator ...`; "
                    "--batch-size is the global batch, split evenly across processes.")
    gen.add_argument("--data", required=True, metavar="DIR", help="dataset directory (with train/ and val/ shards)")
    gen.add_argument("-o", "--output", required=True, metavar="RUN_DIR",
                     help="run directory: checkpoint.pt, log.jsonl, loss_curve.png, exported weights")
    gen.add_argument("--preset", default="small", help="generator size preset: small or paper (default small)")
    gen.add_argument("--model-option", action="append", default=[], metavar="FIELD=VALUE",
                     help="override one field of the preset's GeneratorConfig (repeatable), e.g. layers=2")
    gen.add_argument("--lookahead-ms", type=int, default=None,
                     help="audio lookahead of both audio encoders in ms, 0-120 in steps of 10 (default: the preset's; "
                          "with --init-weights: the file's, which this may lengthen)")
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
                          "come from the file (--preset and --model-option are ignored, except the "
                          f"training-only options {', '.join(sorted(TRAINING_ONLY_OPTIONS))}); "
                          "--lookahead-ms (or --model-option self_lookahead_ms=MS / other_lookahead_ms=MS) "
                          "may lengthen the file's lookahead: the new lookahead frames start with zero "
                          "weights, so training starts from the same function; --model-option audio_layers=N "
                          "may deepen its audio encoders (the new blocks start as identities). The optimizer, "
                          "schedule and EMA start afresh")
    gen.add_argument("--export", default=None, metavar="PATH",
                     help=f"where to write the EMA weights (default RUN_DIR/{EXPORT_NAME})")
    gen.add_argument("--export-dtype", choices=("float16", "float32"), default="float16",
                     help="dtype of the exported weights (default float16; the validation loss of the "
                          "fp16-rounded EMA is recorded next to the fp32 one)")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar (logs still written)")
    # Test hook: a module with build(preset, overrides, lookahead_ms) -> (model, cfg) and
    # save_weights(model, path, info), standing in for dystream.generator.
    gen.add_argument("--model-factory", default=None, help=argparse.SUPPRESS)
    gen.set_defaults(func=run, command_parser=gen)
    average.configure(what)


# -- the model, through the generator's contract ---------------------------------------------

def build(preset_name: str, overrides: dict[str, str], lookahead_ms: int | None):
    """The real generator from a preset with field overrides."""
    try:
        from dystream.generator.config import preset
        from dystream.generator.model import Generator
    except ImportError as exc:
        raise MissingDependencyError(f"the generator model is not available ({exc}); "
                                     "install the complete dystream package") from exc
    cfg = apply_overrides(preset(preset_name), overrides, lookahead_ms)
    return Generator(cfg), cfg


# Model options that shape only the training loss, not the function the weights compute:
# they may be set with --model-option on top of --init-weights.
TRAINING_ONLY_OPTIONS = frozenset({"phone_weight", "future_weight", "loss_channel_weights", "spec_warp",
                                   "spec_eq_db", "spec_masks", "spec_mask_width", "spec_band_prob",
                                   "spec_reverb_prob", "spec_gain_db", "spec_noise_prob", "spec_noise_snr",
                                   "voice_adversary_weight", "head_draws"})
# Model options that --init-weights may change: the audio lookahead, to a larger value (the
# front projection's weights on the new lookahead frames start at zero), the audio encoders'
# depth, to a larger value (new blocks start as identities), and the front end's running
# mean normalisation (its prior mean starts at the training data's mean).
WIDENING_OPTIONS = frozenset({"self_lookahead_ms", "other_lookahead_ms", "audio_layers", "mean_norm_seconds",
                              "mean_norm_context_seconds", "mean_norm_prior_frames"})


def initial_weights(path: str | Path) -> tuple[str, dict[str, str], dict[str, torch.Tensor], dict[str, Any]]:
    """(preset, model options, state dict, training record) of a generator weights file.

    The options are the fields in which the file's config differs from its preset, as
    --model-option strings, so that the run's record rebuilds the same model on resume."""
    from dystream.generator.config import PRESETS
    from dystream.generator.weights import load_generator

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--init-weights {path}: no such file")
    model = load_generator(path, inference=False)      # float32, as trained; a clear error for a foreign file
    info = model.weights_info
    preset_name = info.get("preset") if info.get("preset") in PRESETS else "small"
    base = dataclasses.asdict(PRESETS[preset_name])
    # Compared as JSON: a config read from a file holds lists where the preset holds tuples.
    options = {name: (json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value))
               for name, value in dataclasses.asdict(model.cfg).items()
               if json.dumps(base.get(name), sort_keys=True) != json.dumps(value, sort_keys=True)}
    return preset_name, options, model.state_dict(), info


def save_weights(model, path, info, dtype: torch.dtype | None = None) -> None:
    from dystream.generator.weights import save_weights as save

    save(model, path, info, dtype=dtype)


def apply_overrides(cfg: Any, overrides: dict[str, str], lookahead_ms: int | None) -> Any:
    """A copy of a config dataclass with FIELD=VALUE strings parsed to each field's type."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    changes: dict[str, Any] = {}
    for name, text in overrides.items():
        if name not in fields:
            raise InputError(f"--model-option {name}: no such field; fields are {', '.join(sorted(fields))}")
        changes[name] = _parse_like(getattr(cfg, name), text, name)
    if lookahead_ms is not None:
        targets = [name for name in fields if name.endswith("lookahead_ms")]
        if not targets:
            raise InputError("--lookahead-ms: this generator config has no lookahead field")
        for name in targets:
            changes[name] = type(getattr(cfg, name))(lookahead_ms)
    return dataclasses.replace(cfg, **changes)


def _parse_like(current: Any, text: str, name: str) -> Any:
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if isinstance(current, (int, float, str)):
            return type(current)(text)
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"--model-option {name}={text}: expected a value like {current!r}") from exc


def _parse_options(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError(f"--model-option {pair!r}: write it as FIELD=VALUE")
        out[name.strip()] = value.strip()
    return out


def command_line(args: argparse.Namespace, world_size: int) -> str:
    """The command that reproduces this run: every option that differs from its default."""
    words = ["dystream", "train", "generator"]
    parser: argparse.ArgumentParser = args.command_parser
    for action in parser._actions:
        # --resume is left out: the command retrains the run from scratch.
        if not action.option_strings or action.dest in ("help", "model_factory", "resume", "command_parser"):
            continue
        value = getattr(args, action.dest, None)
        if value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            words.append(flag)
        elif isinstance(value, list):
            for item in value:
                words += [flag, str(item)]
        elif value == "" and action.const == "":
            words.append(flag)
        else:
            words += [flag, str(value)]
    if world_size > 1:
        words = ["torchrun", f"--nproc_per_node={world_size}", "-m", *words]
    return shlex.join(words)


def _config_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))


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
    run_dir = Path(args.output)
    factory = importlib.import_module(args.model_factory) if args.model_factory else sys.modules[__name__]

    state = None
    preset_name, overrides, lookahead_ms = args.preset, _parse_options(args.model_option), args.lookahead_ms
    init_state, uncalibrated = None, []
    if args.init_weights:
        if args.resume is not None:
            raise InputError("--init-weights starts a new run from trained weights and --resume continues a "
                             "run from its checkpoint: give one of them")
        kept = {k: v for k, v in overrides.items() if k in TRAINING_ONLY_OPTIONS | WIDENING_OPTIONS}
        if len(kept) < len(overrides):
            log.warning("--init-weights: the model's settings come from %s; --model-option (except the "
                        "training-only %s, a longer lookahead and deeper audio encoders) is ignored",
                        args.init_weights, ", ".join(sorted(TRAINING_ONLY_OPTIONS)))
        preset_name, overrides, init_state, init_info = initial_weights(args.init_weights)
        overrides = {**overrides, **kept}
    if args.resume is not None:
        state = load_checkpoint(args.resume or run_dir / CHECKPOINT_NAME, map_location="cpu")
        saved = state["record"]
        if (preset_name, overrides, lookahead_ms) != (saved["preset"], saved["model_options"], saved["lookahead_ms"]):
            log.warning("resuming: using the checkpoint's model settings (preset %s, options %s, lookahead %s)",
                        saved["preset"], saved["model_options"], saved["lookahead_ms"])
        preset_name, overrides, lookahead_ms = saved["preset"], saved["model_options"], saved["lookahead_ms"]
        if state["world_size"] != ctx.world_size:
            log.warning("checkpoint written by %d process(es), resuming on %d: training continues, "
                        "but the batches differ from an uninterrupted run", state["world_size"], ctx.world_size)

    torch.manual_seed(args.seed)  # initial weights follow --seed (DDP copies rank 0's to the others)
    model, cfg = factory.build(preset_name, overrides, lookahead_ms)
    if init_state is not None:
        # A longer lookahead than the file's (zero weights on it) and deeper audio encoders
        # (identity blocks after the trained ones): the run starts from the file's function.
        for grow in ("widen_lookahead", "deepen_audio_encoders"):
            if hasattr(model, grow):
                try:
                    init_state = getattr(model, grow)(init_state)
                except ValueError as exc:
                    raise InputError(f"--init-weights {args.init_weights}: {exc}") from None
        try:                                  # weights and the motion statistics they were trained with
            missing, unexpected = model.load_state_dict(init_state, strict=False)
        except RuntimeError as exc:
            raise InputError(f"--init-weights {args.init_weights} does not fit the model it describes ({exc})") from None
        # The training-only phone probe and voice adversary, switched on or off for this run,
        # start fresh or are dropped, as does a running mean's prior; anything else must match.
        fresh = ("phone_probe.", "voice_probe.")
        uncalibrated = [k for k in missing if k.endswith("running_mean.prior")]
        missing = [k for k in missing if not k.startswith(fresh) and k not in uncalibrated]
        unexpected = [k for k in unexpected if not k.endswith("running_mean.prior")]
        unexpected = [k for k in unexpected if not k.startswith(fresh)]
        if missing or unexpected:
            raise InputError(f"--init-weights {args.init_weights} does not fit the model it describes "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        log.info("initial weights from %s (%s steps of training)", args.init_weights, init_info.get("steps", "?"))
    # training_loss predicts frames 1..T-1 of a window from their predecessors, so T = W + 1
    # trains every attention span the W-frame sliding window can hold at inference.
    window_frames = int(cfg.window) + 1
    num_params = sum(p.numel() for p in model.parameters())
    log.info("generator preset %s: %.2fM parameters, window %d frames", preset_name, num_params / 1e6, window_frames)

    loaded = time.monotonic()
    train_conversations = load_conversations(args.data, "train")
    try:
        val_conversations = load_conversations(args.data, "val")
    except InputError:
        val_conversations = []
    if args.until_plateau and not val_conversations:
        raise InputError(f"--until-plateau needs validation data, but {Path(args.data) / 'val'} has no shards")
    left, right = model.audio_context()
    train_bank = WindowBank(train_conversations, window_frames, left, right, ctx.device)
    val_bank = WindowBank(val_conversations, window_frames, left, right, ctx.device) if val_conversations else None
    if state is None and (init_state is None or uncalibrated) and hasattr(model, "calibrate_running_means"):
        # The front end's running-mean prior (mean_norm_seconds) starts at the training audio's
        # mean log-mel: 64 windows spread evenly over the bank, both parties (no random draw).
        spread = torch.linspace(0, train_bank.num_windows - 1, min(64, train_bank.num_windows))
        spread = spread.long().to(train_bank.device)
        audio = [train_bank.gather(spread, torch.full_like(spread, party))[0] for party in (0, 1)]
        model.to(ctx.device).calibrate_running_means(torch.cat(audio), torch.cat(audio[::-1]))
    if init_state is None:  # fine-tuning keeps the statistics the initial weights were trained with
        mean, std = motion_statistics(train_conversations)
        if cfg.pose_relative:
            mean, std = relative_motion_statistics(train_bank, model.relative_mask.cpu().numpy() > 0,
                                                   args.anchor_strategy, mean, std, seed=args.seed)
        model.set_motion_stats(torch.from_numpy(mean), torch.from_numpy(std))
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
    record = {
        "data_dir": str(Path(args.data).resolve()), "train_hours": round(train_bank.hours, 4),
        "preset": preset_name, "model_options": overrides, "lookahead_ms": lookahead_ms,
        "generator_config": _config_dict(cfg), "parameters": num_params,
        "command": command_line(args, ctx.world_size),
        **({"init_weights": str(Path(args.init_weights).resolve()),
            "init_weights_steps": init_info.get("steps")} if init_state is not None else {}),
        "device": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
    }
    if state is not None and "init_weights" in state["record"]:   # a resumed fine-tuning run stays one
        record["init_weights"] = state["record"]["init_weights"]
        record["init_weights_steps"] = state["record"].get("init_weights_steps")
        record["command"] += " " + shlex.join(["--init-weights", record["init_weights"]])
    trainer = Trainer(model, train_bank, val_bank, options, run_dir, ctx, record=record)
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resumed at step %d", trainer.step)
        del state
    result = trainer.fit()

    if ctx.is_main:
        curve = plot_loss_curve(run_dir, run_dir / LOSS_CURVE_NAME)
        export = Path(args.export) if args.export else run_dir / EXPORT_NAME
        device_seconds = result.train_seconds * ctx.world_size
        info = {
            **{k: v for k, v in record.items() if k != "generator_config"},
            "steps": result.step, "batch_size": options.batch_size, "world_size": ctx.world_size,
            "anchor_strategy": options.anchor_strategy, "seed": options.seed,
            "stopped_because": result.stopped_because,
            "train_wall_seconds": round(result.train_seconds, 1),
            ("gpu_seconds" if ctx.device.type == "cuda" else "cpu_process_seconds"): round(device_seconds, 1),
            "final_val_loss": result.val_history[-1][1] if result.val_history else None,
            "weights": "EMA (decay %g)" % options.ema_decay,
        }
        export_dtype = getattr(torch, args.export_dtype)
        if val_bank is not None:
            # Is the export dtype enough? Validate the EMA rounded to it, beside the fp32 EMA.
            rounded = copy.deepcopy(trainer.ema)
            with torch.no_grad():
                for param in rounded.parameters():
                    param.copy_(param.to(export_dtype).float())
            info["final_val_loss_export_dtype"] = trainer.validation_loss(rounded)
            info["final_val_loss_fp32"] = trainer.validation_loss(trainer.ema)
        info["export_dtype"] = args.export_dtype
        export.parent.mkdir(parents=True, exist_ok=True)
        factory.save_weights(trainer.ema, export, info, dtype=export_dtype)
        (run_dir / "training_record.json").write_text(json.dumps(info, indent=2) + "\n")
        log.info("stopped at step %d (%s) after %.1f min; EMA weights -> %s; loss curve -> %s",
                 result.step, result.stopped_because, result.train_seconds / 60, export, curve)
    ddp.barrier(ctx)
    return 0
