"""The DyStream generator: two causal audio encoders, a frame transformer, a flow head.

Frame t of the output is sampled from the flow head conditioned on c_t, which the
transformer computes from the previous motion frame, the fused audio features of
frame t (self and other, each up to its lookahead) and the anchor frame. Motion
is modelled in normalised units ((m - mean) / std, buffers saved with the
weights) and, with ``cfg.pose_relative``, with the head pose taken relative to the
anchor's (``to_model`` / ``from_model``); every public method takes and returns
motion in the raw motion space.
"""

from __future__ import annotations

import torch
from torch import nn

from dystream.generator.audio_encoder import CausalAudioEncoder
from dystream.generator.audio_frontend import ChannelAugmentation, random_equaliser
from dystream.generator.config import PHONE_CLASS_COUNT, VOICE_CLASS_COUNT, GeneratorConfig
from dystream.generator.flow_head import FlowHead
from dystream.generator.transformer import FrameTransformer
from dystream.motion import NAMES, POSE_SLICE


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


class Generator(nn.Module):
    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.self_encoder = CausalAudioEncoder(cfg, stream=0)
        self.other_encoder = CausalAudioEncoder(cfg, stream=1)
        self.transformer = FrameTransformer(cfg)
        self.head = FlowHead(cfg.motion_dim, cfg.width, cfg.head_width, cfg.head_blocks)
        # Dropped conditions (guidance, condition dropout) are these learned null embeddings.
        self.null_self = nn.Parameter(torch.zeros(cfg.audio_width))
        self.null_other = nn.Parameter(torch.zeros(cfg.audio_width))
        self.null_anchor = nn.Parameter(torch.zeros(cfg.width))
        self.register_buffer("motion_mean", torch.zeros(cfg.motion_dim))
        self.register_buffer("motion_std", torch.ones(cfg.motion_dim))
        # Weights of the per-channel MSE (config, not state: rebuilt from cfg on load).
        weights = torch.ones(cfg.motion_dim)
        for name, weight in cfg.loss_channel_weights.items():
            weights[NAMES.index(name)] = float(weight)
        self.register_buffer("loss_channel_weights", weights / weights.mean(), persistent=False)
        # 1 on the channels modelled relative to the anchor (none unless cfg.pose_relative).
        relative = torch.zeros(cfg.motion_dim)
        if cfg.pose_relative:
            relative[POSE_SLICE] = 1.0
        self.register_buffer("relative_mask", relative, persistent=False)
        # Training-only probe of future frames (cfg.future_frames); never used at inference.
        self.future_probe = (nn.Linear(cfg.width, cfg.future_frames * cfg.motion_dim)
                             if cfg.future_frames > 0 else None)
        # Training-only phone probe on the self audio features (cfg.phone_weight).
        self.phone_probe = nn.Linear(cfg.audio_width, PHONE_CLASS_COUNT) if cfg.phone_weight > 0 else None
        # Training-only voice classifier behind a gradient reversal (cfg.voice_adversary_weight).
        self.voice_probe = (nn.Linear(cfg.audio_width, VOICE_CLASS_COUNT)
                            if cfg.voice_adversary_weight > 0 else None)

    # -- parameters and normalisation ----------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        return {
            "audio encoders": count(self.self_encoder) + count(self.other_encoder),
            "transformer": count(self.transformer),
            "flow head": count(self.head),
            "total": count(self) - sum(count(probe) for probe in (self.future_probe, self.phone_probe,
                                                                  self.voice_probe) if probe is not None),
        }

    @torch.no_grad()
    def set_motion_stats(self, mean, std) -> None:
        """Normalisation of motion: mean [D], std [D] (floored at 1e-3 so constant channels stay finite)."""
        mean = torch.as_tensor(mean, dtype=self.motion_mean.dtype).reshape(-1)
        std = torch.as_tensor(std, dtype=self.motion_std.dtype).reshape(-1)
        if mean.numel() != self.cfg.motion_dim or std.numel() != self.cfg.motion_dim:
            raise ValueError(f"motion stats must have {self.cfg.motion_dim} values each")
        self.motion_mean.copy_(mean)
        self.motion_std.copy_(std.clamp_min(1e-3))

    def normalise(self, motion: torch.Tensor) -> torch.Tensor:
        return (motion - self.motion_mean) / self.motion_std

    def denormalise(self, motion: torch.Tensor) -> torch.Tensor:
        return motion * self.motion_std + self.motion_mean

    def pose_shift(self, anchor: torch.Tensor) -> torch.Tensor:
        """What is subtracted from raw motion before normalising: the anchor's pose
        channels with ``cfg.pose_relative``, zeros otherwise (same shape as anchor)."""
        return anchor * self.relative_mask.to(anchor.dtype)

    def to_model(self, motion: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """Raw motion [.., D] -> the model's units, relative to ``anchor`` (broadcastable)."""
        return self.normalise(motion - self.pose_shift(anchor))

    def from_model(self, x: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """The model's units -> raw motion (inverse of ``to_model``)."""
        return self.denormalise(x) + self.pose_shift(anchor)

    @property
    def device(self) -> torch.device:
        """Where the transformer and head live (the audio encoders may differ in dtype)."""
        return self.null_anchor.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the transformer and head, which the rollout computes in."""
        return self.null_anchor.dtype

    def set_encoder_dtype(self, dtype: torch.dtype) -> Generator:
        """Run both audio encoders in ``dtype`` (weights and streaming state); they still take
        and return the caller's dtype. float64 on the CPU makes the streaming path (one frame
        per call) equal the offline one (a whole clip per call): in float32 their matmuls
        round differently, which the trained rollout amplifies to ~1e-5 in motion."""
        self.self_encoder.to(dtype)
        self.other_encoder.to(dtype)
        return self

    def widen_lookahead(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A state dict of this model with a shorter lookahead on either stream -> one that
        loads into this model and computes the same function (the new lookahead frames
        start with zero weights). Anything else passes unchanged."""
        state = dict(state)
        for name, encoder in self.named_children():
            if not isinstance(encoder, CausalAudioEncoder):
                continue
            key = f"{name}.front.weight"
            if key in state and state[key].shape != encoder.front.weight.shape:
                state[key] = encoder.widen_front(state[key])
        return state

    def deepen_audio_encoders(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A state dict of this model whose audio encoders have fewer blocks -> one that loads
        into this model and computes the same function: each new block follows the trained
        ones (before the output norm) as this model initialised it, but with the output layer
        of its MLP zeroed, so its residual adds nothing until training moves it. Anything else
        passes unchanged; a file with more blocks than this model is refused."""
        state = dict(state)
        for name, encoder in self.named_children():
            if not isinstance(encoder, CausalAudioEncoder):
                continue
            prefix = f"{name}.blocks."
            trained = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
            if not trained:
                continue
            have, want = max(trained) + 1, len(encoder.blocks)
            if have > want:
                raise ValueError(f"the weights' {name} has {have} blocks and this model's {want}: "
                                 "growing the audio encoders does not remove blocks")
            for i in range(have, want):
                for key, value in encoder.blocks[i].state_dict().items():
                    new = torch.zeros_like(value) if key.startswith("mlp.2.") else value.detach().clone()
                    state[f"{prefix}{i}.{key}"] = new
        return state

    @torch.no_grad()
    def calibrate_running_means(self, self_audio: torch.Tensor, other_audio: torch.Tensor) -> None:
        """Set each encoder's running-mean prior (``mean_norm_seconds``) to the power-weighted
        mean log-mel of training audio [B, N] (``audio_context`` windows); no-op when off."""
        for encoder, audio in ((self.self_encoder, self_audio), (self.other_encoder, other_audio)):
            if encoder.running_mean is not None:
                frames = (audio.shape[1] - encoder.samples_needed(0)) // self.cfg.samples_per_frame
                encoder.running_mean.calibrate(encoder._windows(audio.float(), frames))

    # -- shared pieces -----------------------------------------------------
    def audio_context(self) -> tuple[int, int]:
        """(left, right): samples needed before frame t0 and after the last frame.

        left covers the mel window overhang, the front convolution's left context, the
        receptive field of the causal encoder layers and (``mean_norm_seconds``) the audio
        that only feeds the running mean; right is the larger lookahead.
        """
        cfg = self.cfg
        frames = cfg.mean_norm_context_frames + cfg.encoder_context_frames
        left = cfg.front_left_samples + frames * cfg.samples_per_frame
        right = max(cfg.lookahead_samples(0), cfg.lookahead_samples(1))
        return left, right

    def anchor_token(self, anchor_normalised: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """anchor [B, D] (normalised), keep [B] bool -> anchor tokens [B, 1, width]."""
        token = self.transformer.anchor_in(anchor_normalised)
        return torch.where(keep[:, None], token, self.null_anchor.to(token.dtype))[:, None]

    def drop_audio(self, features: torch.Tensor, keep: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
        """Replace features [.., H] where keep [..] is False by the stream's null embedding."""
        return torch.where(keep[..., None], features, null.to(features.dtype))

    # -- training ----------------------------------------------------------
    @property
    def wants_phones(self) -> bool:
        """True when training_loss uses per-frame phone classes (the phone probe is on)."""
        return self.phone_probe is not None

    @property
    def wants_voices(self) -> bool:
        """True when training_loss uses the self party's voice (the voice adversary is on)."""
        return self.voice_probe is not None

    def adversary_parameters(self) -> list[nn.Parameter]:
        """The voice adversary's classifier (empty when off). The trainer clips their gradient
        on its own: a fresh classifier's gradient is several times the rest of the model's and,
        under one global norm clip, would scale the flow-matching update down with it."""
        return [] if self.voice_probe is None else list(self.voice_probe.parameters())

    def training_loss(self, self_audio, other_audio, motion, anchor, anchor_keep, generator=None, phones=None,
                      voices=None):
        """Flow-matching loss on one batch of windows.

        self_audio, other_audio: [B, left + T*640 + right] (``audio_context``), starting
        ``left`` samples before the window's first frame. motion [B, T, D], anchor [B, D]
        (raw motion units), anchor_keep [B] bool (the trainer's anchor strategy; the model
        also drops the anchor with p=0.1 for guidance).

        Frames 1..T-1 are predicted, each from the (noised) previous frame: the context
        is the ground truth shifted by one frame, each frame replaced by its noisy version
        with p=context_noise_prob and then blended back toward clean with a weight rising
        linearly from 0 (oldest) to 1 (newest). One sigma ~ U(0, 1) per sample,
        x_sigma = (1 - sigma) x0 + sigma eps; the head predicts x0; per-frame MSE in
        normalised units, the last ``last_frames`` frames weighted ``last_frames_weight``.
        Self/other audio features are replaced by null embeddings per frame with
        p=audio_drop_prob, the anchor per sample with p=anchor_drop_prob.
        Options (GeneratorConfig): pose_relative (pose measured from the anchor),
        spec_warp / spec_eq_db (front-end speaker augmentation, training mode only),
        spec_masks / spec_band_prob / spec_reverb_prob / spec_gain_db / spec_noise_prob (a
        random recording channel, level and noise floor in the front end, training mode only),
        head_draws (noise draws per frame for the head), future_frames (the probe's
        auxiliary MSE on frames t+1..t+K, added with weight future_weight),
        loss_channel_weights (per-channel weights of the MSE), phone_weight (the phone
        probe's cross-entropy on ``phones`` [B, T], class indices per frame of the self
        party, -1 where unknown; skipped when ``phones`` is None), voice_adversary_weight
        (a voice classifier's cross-entropy on ``voices`` [B], the self party's voice index,
        through a gradient reversal into the self encoder; training mode only).
        Returns (loss, stats) with stats as floats.
        """
        cfg = self.cfg
        b, t, d = motion.shape
        if t < 2:
            raise ValueError("training windows need at least 2 frames")
        left, right = self.audio_context()
        expected = left + t * cfg.samples_per_frame + right
        for name, audio in (("self_audio", self_audio), ("other_audio", other_audio)):
            if tuple(audio.shape) != (b, expected):
                raise ValueError(f"{name} must be [{b}, {expected}] (left {left} + {t} frames + right {right}), "
                                 f"got {tuple(audio.shape)}")
        device = motion.device
        ctx = cfg.encoder_context_frames
        stats = cfg.mean_norm_context_frames
        self_features = self.self_encoder(self_audio, ctx + t, self._augmentation(b, generator, device),
                                          stats)[:, ctx + 1:]
        other_features = self.other_encoder(other_audio, ctx + t, self._augmentation(b, generator, device),
                                            stats)[:, ctx + 1:]

        clean = self.to_model(motion, anchor[:, None])
        previous, target = clean[:, :-1], clean[:, 1:]
        steps = t - 1

        sigma = _uniform((b,), generator, device)
        s = sigma[:, None, None]
        noisy_previous = (1 - s) * previous + s * _normal(previous.shape, generator, device)
        replaced = _uniform((b, steps, 1), generator, device) < cfg.context_noise_prob
        context = torch.where(replaced, noisy_previous, previous)
        clean_weight = torch.linspace(0.0, 1.0, steps, device=device)[None, :, None] if steps > 1 else \
            torch.ones(1, 1, 1, device=device)
        context = clean_weight * previous + (1 - clean_weight) * context

        keep_self = _uniform((b, steps), generator, device) >= cfg.audio_drop_prob
        keep_other = _uniform((b, steps), generator, device) >= cfg.audio_drop_prob
        keep_anchor = anchor_keep.to(device=device, dtype=torch.bool) & (
            _uniform((b,), generator, device) >= cfg.anchor_drop_prob)
        phone_ce = None
        if self.phone_probe is not None and phones is not None:
            phone_ce, phone_acc = self._phone_loss(self_features, phones[:, 1:])
        voice_ce = None
        if self.voice_probe is not None and voices is not None and self.training:
            reversed_features = _ReverseGradient.apply(self_features, cfg.voice_adversary_weight)
            logits = self.voice_probe(reversed_features).float()  # [B, S, classes]
            labels = (voices.to(device=device, dtype=torch.long) % VOICE_CLASS_COUNT)[:, None].expand(-1, steps)
            voice_ce = nn.functional.cross_entropy(logits.transpose(1, 2), labels)
            with torch.no_grad():
                voice_acc = (logits.argmax(-1) == labels).float().mean()
        self_features = self.drop_audio(self_features, keep_self, self.null_self)
        other_features = self.drop_audio(other_features, keep_other, self.null_other)
        fused = self.transformer.fuse_audio(self_features, other_features)
        tokens = self.anchor_token(self.to_model(anchor, anchor), keep_anchor)

        condition = self.transformer(context, fused, tokens)
        # The first draw uses the context's noise level; further draws (cfg.head_draws) are
        # fresh (sigma, noise) pairs on the same condition.
        draws = cfg.head_draws
        sigmas = torch.cat([sigma, _uniform(((draws - 1) * b,), generator, device)]) if draws > 1 else sigma
        noise = _normal((draws * b, steps, d), generator, device)
        targets, conditions = (target.repeat(draws, 1, 1), condition.repeat(draws, 1, 1)) if draws > 1 \
            else (target, condition)
        sd = sigmas[:, None, None]
        noisy_target = (1 - sd) * targets + sd * noise
        predicted = self.head(noisy_target, sigmas[:, None].expand(draws * b, steps), conditions)

        # Channels weigh cfg.loss_channel_weights, normalised to mean 1 (all 1: plain MSE).
        per_frame = ((predicted.float() - targets.float()).square()
                     * self.loss_channel_weights).mean(dim=-1)  # [draws * B, steps]
        weights = torch.ones(steps, device=device)
        weights[-cfg.last_frames:] = cfg.last_frames_weight
        loss = (per_frame * weights).sum() / (weights.sum() * draws * b)
        future_mse = None
        if self.future_probe is not None:
            future_mse = self._future_loss(condition, target)
            loss = loss + cfg.future_weight * future_mse
        if phone_ce is not None:
            loss = loss + cfg.phone_weight * phone_ce
        if voice_ce is not None:
            loss = loss + voice_ce  # the classifier learns at full rate; the encoder gets -weight x
        with torch.no_grad():
            stats = {
                "loss": loss.detach(),
                "mse": per_frame.mean(),
                "mse_last": per_frame[:, -cfg.last_frames:].mean(),
                "sigma": sigma.mean(),
            }
            if future_mse is not None:
                stats["future_mse"] = future_mse.detach()
            if phone_ce is not None:
                stats["phone_ce"], stats["phone_acc"] = phone_ce.detach(), phone_acc
            if voice_ce is not None:
                stats["voice_ce"], stats["voice_acc"] = voice_ce.detach(), voice_acc
            stats = {k: float(v) for k, v in stats.items()}
        return loss, stats

    def _augmentation(self, batch: int, generator, device) -> dict | None:
        """Keyword arguments of one stream's log-mel front end in training (``warp`` [B],
        ``eq`` [B, n_mels], ``channel``); None in eval mode (validation scores the audio as
        it is) or when every front-end augmentation is off."""
        cfg = self.cfg
        if not self.training:
            return None
        augment = {}
        if cfg.spec_warp > 0 or cfg.spec_eq_db > 0:
            augment["warp"] = 1.0 + (_uniform((batch,), generator, device) * 2 - 1) * cfg.spec_warp
            augment["eq"] = random_equaliser(batch, cfg.n_mels, cfg.spec_eq_db, generator, device)
        if (cfg.spec_masks or cfg.spec_band_prob > 0 or cfg.spec_reverb_prob > 0 or cfg.spec_gain_db > 0
                or cfg.spec_noise_prob > 0):
            logmel = self.self_encoder.logmel
            augment["channel"] = ChannelAugmentation.draw(
                batch, logmel.n_bins, cfg.sample_rate, cfg.mel_hop, masks=cfg.spec_masks,
                mask_width=cfg.spec_mask_width, band_prob=cfg.spec_band_prob,
                reverb_prob=cfg.spec_reverb_prob, gain_db=cfg.spec_gain_db, noise_prob=cfg.spec_noise_prob,
                noise_snr=cfg.spec_noise_snr, generator=generator, device=device)
        return augment or None

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

    def _future_loss(self, condition: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """MSE of the probe's guess of frames t+1..t+K (from c_t) where the window holds them."""
        k, d = self.cfg.future_frames, self.cfg.motion_dim
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
