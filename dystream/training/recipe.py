"""How the generator is trained: the recipe's settings, and the objective that applies them.

The network (:class:`dystream.generator.model.Generator`) knows nothing of training.
``GeneratorObjective`` wraps it with everything only training needs: dropout rates,
the flow-matching loss with its noisy context and condition dropout, and the
auxiliary heads of the recipe (a future-frame probe, a phone probe and a voice
adversary on the self audio encoder). The trainer trains the objective; the
network alone is exported.

The loss (DESIGN.md section 2): frames 1..T-1 of a window are predicted, each from
the (noised) previous frame: the context is the ground truth shifted by one frame,
each frame replaced by its noisy version with p = ``context_noise_prob`` and then
blended back toward clean with a weight rising linearly from 0 (oldest) to 1
(newest). One sigma ~ U(0, 1) per sample, x_sigma = (1 - sigma) x0 + sigma eps;
the head predicts x0; per-frame MSE in normalised units, the last ``last_frames``
frames weighted ``last_frames_weight``. Self/other audio features are replaced by
null embeddings per frame with p = ``audio_drop_prob``, the anchor per sample with
p = ``anchor_drop_prob`` (and wherever the batch's ``anchor_keep`` is False).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dystream.errors import InputError
from dystream.generator.model import Generator
from dystream.generator.transformer import Block

# Classes of the phone probe: the 39 ARPAbet phones of the data engine's labels and
# silence ("pau"), in the order of dystream.training.dataset.PHONE_CLASSES.
PHONE_CLASS_COUNT = 40
# Classes of the voice adversary: voices of the training data by sorted index, modulo this.
VOICE_CLASS_COUNT = 64


@dataclass(frozen=True)
class TrainingRecipe:
    """The training recipe. Defaults: the recipe of the bundled weights (docs/training.md);
    ``TrainingRecipe.paper()`` is the published one (no auxiliary heads)."""

    dropout: float = 0.1              # residual branches and attention weights
    context_noise_prob: float = 0.5
    last_frames: int = 5
    last_frames_weight: float = 3.0
    audio_drop_prob: float = 0.1      # per frame and stream
    anchor_drop_prob: float = 0.1     # per sample
    # A linear probe on c_t regresses the next ``future_frames`` clean frames (an auxiliary
    # MSE with this weight), so c_t carries where the motion is going (a nod under way).
    future_frames: int = 8
    future_weight: float = 0.05
    # A linear probe on the self audio encoder's features classifies the phone at each
    # frame (cross-entropy with this weight; frames without a label are skipped), so the
    # encoder learns what is said rather than who says it.
    phone_weight: float = 0.1
    # A linear classifier on the self encoder's features guesses the speaking voice; its
    # gradient reaches the encoder reversed and scaled by this weight, pushing the encoder
    # to drop who speaks.
    voice_adversary_weight: float = 0.1

    def __post_init__(self) -> None:
        probabilities = ("dropout", "context_noise_prob", "audio_drop_prob", "anchor_drop_prob")
        if any(not 0.0 <= getattr(self, name) < 1.0 for name in probabilities):
            raise InputError(f"{', '.join(probabilities)} must be in [0, 1)")
        if self.last_frames < 1 or self.last_frames_weight <= 0:
            raise InputError("last_frames must be >= 1 and last_frames_weight > 0")
        if self.future_frames < 0 or min(self.future_weight, self.phone_weight, self.voice_adversary_weight) < 0:
            raise InputError("future_frames and the auxiliary weights must be >= 0")

    @classmethod
    def paper(cls) -> "TrainingRecipe":
        """DyStream's published recipe: the loss alone, no auxiliary heads."""
        return cls(future_frames=0, phone_weight=0.0, voice_adversary_weight=0.0)


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient backward multiplied by -scale."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def _uniform(shape, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def _normal(shape, generator, device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=device)


class GeneratorObjective(nn.Module):
    """``network`` under ``recipe``: ``forward(batch, generator)`` -> (loss, stats).

    The contract every objective the trainer trains follows (docs/CONTRACTS.md):
    ``network`` (what is exported), ``audio_context()`` and ``window_frames`` (what the
    training windows hold), ``forward`` and ``adversary_parameters()``."""

    def __init__(self, network: Generator, recipe: TrainingRecipe = TrainingRecipe()) -> None:
        super().__init__()
        self.network, self.recipe = network, recipe
        cfg = network.cfg
        for module in network.modules():
            if isinstance(module, nn.Dropout):
                module.p = recipe.dropout
            if isinstance(module, Block):
                module.attention_dropout = recipe.dropout
        self.future_probe = (nn.Linear(cfg.width, recipe.future_frames * cfg.motion_dim)
                             if recipe.future_frames > 0 else None)
        self.phone_probe = nn.Linear(cfg.audio_width, PHONE_CLASS_COUNT) if recipe.phone_weight > 0 else None
        self.voice_probe = nn.Linear(cfg.audio_width, VOICE_CLASS_COUNT) if recipe.voice_adversary_weight > 0 else None

    def audio_context(self) -> tuple[int, int]:
        return self.network.audio_context()

    @property
    def window_frames(self) -> int:
        """Frames per training window: the loss predicts frames 1..T-1 from their
        predecessors, so T = W + 1 trains every attention span the window holds."""
        return self.network.cfg.window + 1

    def adversary_parameters(self) -> list[nn.Parameter]:
        """The voice adversary's classifier (empty when off). The trainer clips their gradient on
        its own: a fresh classifier's gradient is several times the rest of the model's and,
        under one global norm clip, would scale the flow-matching update down with it."""
        return [] if self.voice_probe is None else list(self.voice_probe.parameters())

    def forward(self, batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Loss of one ``WindowBatch`` (dystream.training.dataset): self_audio / other_audio
        [B, left + T * spf + right] (``audio_context``), motion [B, T, D], anchor [B, D] (raw
        units), anchor_keep [B], phones [B, T] (-1 unknown) and voices [B]. Every random draw
        comes from ``generator`` (dropout: the global RNG). Returns (loss, stats) with stats as
        detached 0-d tensors (no host sync)."""
        net, recipe, cfg = self.network, self.recipe, self.network.cfg
        motion, anchor = batch.motion, batch.anchor
        b, t, d = motion.shape
        if t < 2:
            raise ValueError("training windows need at least 2 frames")
        left, right = net.audio_context()
        expected = left + t * cfg.samples_per_frame + right
        for name in ("self_audio", "other_audio"):
            if tuple(getattr(batch, name).shape) != (b, expected):
                raise ValueError(f"{name} must be [{b}, {expected}] (left {left} + {t} frames + right {right}), "
                                 f"got {tuple(getattr(batch, name).shape)}")
        device = motion.device
        ctx = cfg.encoder_context_frames
        self_features, _ = net.self_encoder(batch.self_audio, ctx + t)
        other_features, _ = net.other_encoder(batch.other_audio, ctx + t)
        self_features, other_features = self_features[:, ctx + 1:], other_features[:, ctx + 1:]

        clean = net.to_model(motion, anchor[:, None])
        previous, target = clean[:, :-1], clean[:, 1:]
        steps = t - 1
        sigma = _uniform((b,), generator, device)
        s = sigma[:, None, None]
        noisy_previous = (1 - s) * previous + s * _normal(previous.shape, generator, device)
        replaced = _uniform((b, steps, 1), generator, device) < recipe.context_noise_prob
        context = torch.where(replaced, noisy_previous, previous)
        clean_weight = torch.linspace(0.0, 1.0, steps, device=device)[None, :, None] if steps > 1 else \
            torch.ones(1, 1, 1, device=device)
        context = clean_weight * previous + (1 - clean_weight) * context

        keep_self = _uniform((b, steps), generator, device) >= recipe.audio_drop_prob
        keep_other = _uniform((b, steps), generator, device) >= recipe.audio_drop_prob
        keep_anchor = batch.anchor_keep.to(device=device, dtype=torch.bool) & (
            _uniform((b,), generator, device) >= recipe.anchor_drop_prob)
        aux = {}  # auxiliary losses (name -> (loss, weight)) and their accuracies
        if self.phone_probe is not None and batch.phones is not None:
            ce, aux["phone_acc"] = self._phone_loss(self_features, batch.phones[:, 1:])
            aux["phone_ce"] = (ce, recipe.phone_weight)
        if self.voice_probe is not None and batch.voices is not None and self.training:
            ce, aux["voice_acc"] = self._voice_loss(self_features, batch.voices, steps)
            aux["voice_ce"] = (ce, 1.0)  # the classifier learns at full rate; the encoder gets -weight x
        fused = net.fuse_audio(self_features, other_features, keep_self, keep_other)
        tokens = net.anchor_token(net.to_model(anchor, anchor), keep_anchor)
        condition = net.transformer(context, fused, tokens)

        noise = _normal((b, steps, d), generator, device)
        noisy_target = (1 - s) * target + s * noise
        predicted = net.head(noisy_target, sigma[:, None].expand(b, steps), condition)
        per_frame = (predicted.float() - target.float()).square().mean(dim=-1)  # [B, steps]
        weights = torch.ones(steps, device=device)
        weights[-recipe.last_frames:] = recipe.last_frames_weight
        loss = (per_frame * weights).sum() / (weights.sum() * b)
        if self.future_probe is not None:
            aux["future_mse"] = (self._future_loss(condition, target), recipe.future_weight)
        stats = {"mse": per_frame.mean(), "mse_last": per_frame[:, -recipe.last_frames:].mean(), "sigma": sigma.mean()}
        for name, value in aux.items():
            if isinstance(value, tuple):
                value, weight = value
                loss = loss + weight * value
            stats[name] = value
        stats["loss"] = loss
        return loss, {k: v.detach() for k, v in stats.items()}

    def _phone_loss(self, features: torch.Tensor, phones: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-entropy, accuracy) of the phone probe on audio features [B, S, H] against
        class indices [B, S] (-1: no label; both 0 when no frame has one)."""
        logits = self.phone_probe(features).float()
        labels = phones.to(device=logits.device, dtype=torch.long)
        known = labels >= 0
        count = known.sum().clamp(min=1)
        ce = nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
        ce = (ce * known).sum() / count
        with torch.no_grad():
            acc = ((logits.argmax(-1) == labels) & known).sum() / count
        return ce, acc

    def _voice_loss(self, features: torch.Tensor, voices: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-entropy, accuracy) of the voice classifier, its gradient reversed into the encoder."""
        reversed_features = _ReverseGradient.apply(features, self.recipe.voice_adversary_weight)
        logits = self.voice_probe(reversed_features).float()  # [B, S, classes]
        labels = (voices.to(device=features.device, dtype=torch.long) % VOICE_CLASS_COUNT)[:, None].expand(-1, steps)
        ce = nn.functional.cross_entropy(logits.transpose(1, 2), labels)
        with torch.no_grad():
            acc = (logits.argmax(-1) == labels).float().mean()
        return ce, acc

    def _future_loss(self, condition: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """MSE of the probe's guess of frames t+1..t+K (from c_t) where the window holds them."""
        k, d = self.recipe.future_frames, self.network.cfg.motion_dim
        b, steps, _ = condition.shape
        guess = self.future_probe(condition).float().view(b, steps, k, d)
        total = condition.new_zeros((), dtype=torch.float32)
        count = 0
        for j in range(1, k + 1):
            if steps - j <= 0:
                break
            total = total + (guess[:, :steps - j, j - 1] - target[:, j:].float()).square().sum()
            count += b * (steps - j) * d
        return total / max(count, 1)
