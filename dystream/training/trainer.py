"""The training loop for the generator: AdamW, warmup + cosine, EMA, bf16, DDP, exact resume.

The loop knows the model only through the objective contract in docs/CONTRACTS.md
(``objective(batch, generator) -> (loss, stats)``, ``adversary_parameters()``,
``network``); the data only through :class:`WindowBank`.

Exact resume: every random draw of step s on rank r — the batch's windows and
directions, its anchors, the objective's noise (the ``generator`` it is
called with) and dropout (the global torch RNG, reseeded every step) —
comes from a seed derived from (seed, s, r). So the batches after a resume are
those the uninterrupted run would have drawn, and with the model, EMA,
optimizer and scheduler states restored, the losses are identical.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from dystream.training import ddp
from dystream.training.checkpoint import (CHECKPOINT_NAME, restore_rng_states, rng_states,
                                          save_checkpoint)
from dystream.training.dataset import ANCHOR_STRATEGIES, WindowBank
from dystream.errors import InputError

LOG_NAME = "log.jsonl"
SCHEDULES = ("cosine", "constant")

# Purposes mixed into the per-step seed so that streams never collide.
_TRAIN_STREAM, _VALIDATION_STREAM = 1, 2


@dataclass
class TrainOptions:
    batch_size: int = 64                 # global: split evenly across ranks
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    schedule: str = "cosine"             # after warmup: cosine to min_lr_ratio*lr at max_steps, or constant
    min_lr_ratio: float = 0.1
    max_steps: int = 100_000
    max_minutes: float | None = None     # wall-clock budget of this invocation
    until_plateau: bool = False
    plateau_fraction: float = 0.2        # stop when the last 20% of steps ...
    plateau_min_improvement: float = 0.01  # ... improved the val loss by less than 1%
    val_every: int = 500
    val_batches: int = 8
    ckpt_every: int = 1000
    log_every: int = 10
    anchor_strategy: str = "last-weighted"
    seed: int = 0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    progress: bool = True

    def validate(self, world_size: int) -> None:
        if self.batch_size < world_size or self.batch_size % world_size:
            raise InputError(f"--batch-size {self.batch_size} must be a multiple of the number of "
                             f"processes ({world_size}); it is the global batch, split across them")
        if self.anchor_strategy not in ANCHOR_STRATEGIES:
            raise InputError(f"--anchor-strategy {self.anchor_strategy!r}: choose one of {', '.join(ANCHOR_STRATEGIES)}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        for name in ("max_steps", "val_every", "ckpt_every", "log_every", "val_batches"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.lr <= 0:
            raise InputError("--warmup-steps must be >= 0 and --lr > 0")


@dataclass
class TrainResult:
    step: int
    stopped_because: str
    train_seconds: float                 # wall time of training over all invocations of this run
    world_size: int
    val_history: list[tuple[int, float]] = field(default_factory=list)


def derived_seed(seed: int, step: int, rank: int, stream: int) -> int:
    """A well-mixed 63-bit seed, a pure function of its arguments."""
    state = np.random.SeedSequence([seed, step, rank, stream]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def lr_factor(step: int, options: TrainOptions) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if step < options.warmup_steps:
        return (step + 1) / options.warmup_steps
    if options.schedule == "constant":
        return 1.0
    span = max(options.max_steps - options.warmup_steps, 1)
    progress = min((step - options.warmup_steps) / span, 1.0)
    return options.min_lr_ratio + (1 - options.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay for the update after ``step`` earlier updates: ramps up to ``decay``.

    A fixed 0.999 from step 0 keeps the EMA near the random initial weights for the
    first few thousand steps, so its validation loss would look flat (and trip the
    plateau rule) while the model is still learning fast; (1+s)/(10+s) follows the
    weights early and reaches 0.999 after ~9000 steps.
    """
    return min(decay, (1 + step) / (10 + step))


def plateaued(val_history: list[tuple[int, float]], fraction: float = 0.2,
              min_improvement: float = 0.01, min_points: int = 5) -> bool:
    """True when the validation loss improved by less than ``min_improvement`` (relative)
    over the last ``fraction`` of steps.

    Compares the best loss in the last fraction of steps with the best loss
    before it; needs ``min_points`` validations and at least one on each side.
    """
    if len(val_history) < min_points:
        return False
    last_step = val_history[-1][0]
    boundary = last_step * (1 - fraction)
    before = [loss for step, loss in val_history if step <= boundary]
    recent = [loss for step, loss in val_history if step > boundary]
    if not before or not recent:
        return False
    best_before = min(before)
    improvement = (best_before - min(recent)) / max(abs(best_before), 1e-12)
    return improvement < min_improvement


def _decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Weight decay on matrices only: decaying gains, biases and embeddings' norms
    # toward zero fights the normalisation layers and does not regularise.
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def _float_stats(stats: dict[str, Any]) -> dict[str, float]:
    return {k: float(v.item() if torch.is_tensor(v) else v) for k, v in stats.items()}


class Trainer:
    """Trains ``objective`` on windows of ``train_bank``; validates on fixed windows of ``val_bank``.

    ``self.model`` is the objective (its network and any auxiliary heads); ``self.ema`` its
    float32 exponential moving average, whose ``network`` is what a run exports."""

    def __init__(self, objective: nn.Module, train_bank: WindowBank, val_bank: WindowBank | None,
                 options: TrainOptions, run_dir: str | Path, ctx: ddp.DistributedContext,
                 record: dict[str, Any] | None = None):
        options.validate(ctx.world_size)
        self.options = options
        self.ctx = ctx
        self.run_dir = Path(run_dir)
        self.record = dict(record or {})
        self.device = ctx.device
        self.model = objective.to(self.device)
        self.train_bank = train_bank
        self.val_bank = val_bank
        self.per_rank_batch = options.batch_size // ctx.world_size
        self.optimizer = torch.optim.AdamW(_decay_groups(self.model, options.weight_decay), lr=options.lr,
                                           betas=(0.9, 0.999), fused=False)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, options))
        self.step = 0
        self.train_seconds = 0.0
        self.val_history: list[tuple[int, float]] = []
        self.use_autocast = self.device.type == "cuda"
        loss_module = self.model
        if ctx.is_distributed:
            from torch.nn.parallel import DistributedDataParallel

            # Buffers (motion stats) are equal on every rank and fixed: no per-step sync.
            # (torch >= 2.13 renamed broadcast_buffers to forward_sync_buffers.)
            no_buffer_sync = ({"forward_sync_buffers": False}
                              if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                              else {"broadcast_buffers": False})
            # DDP broadcasts rank 0's initial weights to every rank here.
            loss_module = DistributedDataParallel(
                loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # Without an anchor, the anchor's projection never receives a gradient.
                find_unused_parameters=options.anchor_strategy == "none", **no_buffer_sync)
        self.loss_module = loss_module
        # An adversary's classifier is clipped apart from the rest (objective contract).
        self._adversary = list(self.model.adversary_parameters())
        apart = {id(p) for p in self._adversary}
        self._clipped = [p for p in self.model.parameters() if id(p) not in apart]
        # After DDP's broadcast, so that every rank's EMA starts from the same weights.
        self.ema = copy.deepcopy(self.model).float().eval().requires_grad_(False)

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "train_seconds": self.train_seconds,
            "val_history": [list(v) for v in self.val_history],
            "rng": rng_states(),
            "world_size": self.ctx.world_size,
            "options": asdict(self.options),
            "record": self.record,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.val_history = [(int(s), float(v)) for s, v in state["val_history"]]
        restore_rng_states(state["rng"])

    def save(self) -> Path | None:
        """Atomic checkpoint by rank 0; every rank waits so none runs ahead of a half-saved run."""
        path = None
        if self.ctx.is_main:
            path = save_checkpoint(self.run_dir / CHECKPOINT_NAME, self.state_dict())
        ddp.barrier(self.ctx)
        return path

    # -- steps -----------------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_autocast)

    @torch.no_grad()
    def _update_ema(self) -> None:
        ema_params = list(self.ema.parameters())
        params = [p.detach().float() for p in self.model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - ema_decay_at(self.step, self.options.ema_decay))
        for ema_buffer, buffer in zip(self.ema.buffers(), self.model.buffers()):
            ema_buffer.copy_(buffer)

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """One optimizer step; returns (loss, grad norm) as device tensors, no host sync."""
        opts = self.options
        seed = derived_seed(opts.seed, self.step, self.ctx.rank, _TRAIN_STREAM)
        torch.manual_seed(seed)  # dropout inside the model draws from the global RNG
        generator = make_generator(self.device, seed)
        batch = self.train_bank.sample(self.per_rank_batch, generator, opts.anchor_strategy)
        self.model.train()
        with self._autocast():
            loss, stats = self.loss_module(batch, generator=generator)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self._clipped, opts.grad_clip)
        if self._adversary:  # clipped on its own
            torch.nn.utils.clip_grad_norm_(self._adversary, opts.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._update_ema()
        self.step += 1
        return loss.detach(), grad_norm.detach(), stats

    @torch.no_grad()
    def validation_loss(self, model: nn.Module) -> float:
        """Mean loss over fixed windows with fixed noise: the same draws at every validation."""
        if self.val_bank is None:
            raise InputError("no validation split loaded")
        seed = derived_seed(self.options.seed, 0, 0, _VALIDATION_STREAM)
        generator = make_generator(self.device, seed)
        was_training = model.training
        model.eval()
        total = torch.zeros((), device=self.device)
        for _ in range(self.options.val_batches):
            # The global batch size, so that the curve does not depend on the number of processes.
            batch = self.val_bank.sample(self.options.batch_size, generator, self.options.anchor_strategy)
            with self._autocast():
                loss, _ = model(batch, generator=generator)
            total += loss.float()
        model.train(was_training)
        return float(total.item()) / self.options.val_batches

    # -- loop ------------------------------------------------------------------------------

    def _open_log(self):
        """Append to the run's log, dropping records past the resumed step (from a crashed tail)."""
        path = self.run_dir / LOG_NAME
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            kept = []
            if path.exists():
                kept = [line for line in path.read_text().splitlines()
                        if line.strip() and json.loads(line)["step"] <= self.step]
            path.write_text("".join(line + "\n" for line in kept))
            return open(path, "a", buffering=1)
        return None

    def fit(self, on_log: Callable[[dict[str, Any]], None] | None = None,
            interrupt_after: int | None = None) -> TrainResult:
        """Train until --max-steps, --max-minutes or the plateau rule; save a checkpoint at the end.

        ``interrupt_after``: stop after this step as if the run had been cut off
        (the schedule still aims at ``max_steps``), e.g. to test resuming.
        """
        opts, ctx = self.options, self.ctx
        log_file = self._open_log()
        started = time.monotonic()
        seconds_before = self.train_seconds
        interval_start, interval_steps = time.monotonic(), 0
        loss_sum = torch.zeros((), device=self.device)
        grad_sum = torch.zeros((), device=self.device)
        stopped_because = "max-steps"
        progress = None
        if ctx.is_main and opts.progress:
            from tqdm import tqdm

            progress = tqdm(total=opts.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)

        def write(record: dict[str, Any]) -> None:
            if log_file is not None:
                log_file.write(json.dumps(record) + "\n")
            if on_log is not None and ctx.is_main:
                on_log(record)

        try:
            while self.step < opts.max_steps:
                loss, grad_norm, stats = self.train_step()
                loss_sum += loss.float()
                grad_sum += grad_norm.float()
                interval_steps += 1
                if progress is not None:
                    progress.update(1)
                last = self.step == opts.max_steps
                log_now = self.step % opts.log_every == 0 or last
                validate_now = self.val_bank is not None and (self.step % opts.val_every == 0 or last)
                reason = None  # decided on rank 0, broadcast to the others
                if log_now:
                    mean_loss = ddp.mean_across_ranks(loss_sum / interval_steps, ctx).item()
                    mean_grad = (grad_sum / interval_steps).item()
                    now = time.monotonic()
                    record = {"kind": "train", "step": self.step, "loss": mean_loss,
                              "lr": self.scheduler.get_last_lr()[0], "grad_norm": mean_grad,
                              "samples_per_s": interval_steps * opts.batch_size / max(now - interval_start, 1e-9),
                              "elapsed_s": seconds_before + now - started,
                              "last_step_stats": _float_stats(stats)}
                    write(record)
                    if progress is not None:
                        progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{record['lr']:.2e}")
                    loss_sum.zero_()
                    grad_sum.zero_()
                    interval_start, interval_steps = now, 0
                    if opts.max_minutes is not None and now - started >= opts.max_minutes * 60:
                        reason = "max-minutes"
                if validate_now and ctx.is_main:
                    val_ema = self.validation_loss(self.ema)
                    val_raw = self.validation_loss(self.model)
                    self.val_history.append((self.step, val_ema))
                    write({"kind": "val", "step": self.step, "val_loss": val_ema, "val_loss_raw": val_raw})
                    if opts.until_plateau and self.step > opts.warmup_steps and plateaued(self.val_history, opts.plateau_fraction,
                                                        opts.plateau_min_improvement):
                        reason = "plateau"
                stop = False
                if log_now or validate_now:
                    stop = ddp.broadcast_flag(reason is not None, ctx)
                    if stop:
                        stopped_because = reason or "stopped by rank 0"
                if interrupt_after is not None and self.step >= interrupt_after:
                    stop, stopped_because = True, "interrupted"
                if self.step % opts.ckpt_every == 0 or stop or self.step == opts.max_steps:
                    self.train_seconds = seconds_before + time.monotonic() - started
                    self.save()
                if stop:
                    break
        finally:
            if progress is not None:
                progress.close()
            if log_file is not None:
                log_file.close()
        self.train_seconds = seconds_before + time.monotonic() - started
        return TrainResult(step=self.step, stopped_because=stopped_because, train_seconds=self.train_seconds,
                           world_size=ctx.world_size, val_history=list(self.val_history))


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / LOG_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss_curve(run_dir: str | Path, path: str | Path) -> Path:
    """PNG of the training loss (per log interval) and the validation loss (EMA and raw weights)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(run_dir)
    train = [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]
    val = [(r["step"], r["val_loss"], r.get("val_loss_raw")) for r in records if r["kind"] == "val"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if train:
        ax.plot(*zip(*train), lw=0.8, alpha=0.7, label="train (batch mean per log interval)")
    if val:
        steps = [v[0] for v in val]
        ax.plot(steps, [v[1] for v in val], "o-", ms=3, label="validation, EMA weights")
        if all(v[2] is not None for v in val):
            ax.plot(steps, [v[2] for v in val], "s--", ms=3, alpha=0.7, label="validation, raw weights")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("flow-matching loss")
    positive = [y for _, y in train] + [v[1] for v in val]
    if positive and min(positive) > 0:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("generator training")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
