"""The DyStream generator: two causal audio encoders, a frame transformer, a flow head.

Frame t of the output is sampled from the flow head conditioned on c_t, which the
transformer computes from the previous motion frame, the fused audio features of
frame t (self and other, each up to its lookahead) and the anchor frame. Motion
is modelled in normalised units ((m - mean) / std, buffers saved with the
weights); every public method takes and returns motion in the raw motion space.
"""

from __future__ import annotations

import torch
from torch import nn

from dystream.generator.audio_encoder import CausalAudioEncoder
from dystream.generator.config import GeneratorConfig
from dystream.generator.flow_head import FlowHead
from dystream.generator.transformer import FrameTransformer


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

    # -- parameters and normalisation ----------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        return {
            "audio encoders": count(self.self_encoder) + count(self.other_encoder),
            "transformer": count(self.transformer),
            "flow head": count(self.head),
            "total": count(self),
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

    # -- shared pieces -----------------------------------------------------
    def audio_context(self) -> tuple[int, int]:
        """(left, right): samples needed before frame t0 and after the last frame.

        left covers the mel window overhang, the front convolution's left context and
        the receptive field of the causal encoder layers; right is the larger lookahead.
        """
        cfg = self.cfg
        left = cfg.front_left_samples + cfg.encoder_context_frames * cfg.samples_per_frame
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
    def training_loss(self, self_audio, other_audio, motion, anchor, anchor_keep, generator=None):
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
        self_features = self.self_encoder(self_audio, ctx + t)[:, ctx + 1:]
        other_features = self.other_encoder(other_audio, ctx + t)[:, ctx + 1:]

        clean = self.normalise(motion)
        previous, target = clean[:, :-1], clean[:, 1:]
        steps = t - 1

        sigma = _uniform((b,), generator, device)
        noise = _normal(target.shape, generator, device)
        s = sigma[:, None, None]
        noisy_target = (1 - s) * target + s * noise

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
        self_features = self.drop_audio(self_features, keep_self, self.null_self)
        other_features = self.drop_audio(other_features, keep_other, self.null_other)
        fused = self.transformer.fuse_audio(self_features, other_features)
        tokens = self.anchor_token(self.normalise(anchor), keep_anchor)

        condition = self.transformer(context, fused, tokens)
        predicted = self.head(noisy_target, sigma[:, None].expand(b, steps), condition)

        per_frame = (predicted.float() - target.float()).square().mean(dim=-1)  # [B, steps]
        weights = torch.ones(steps, device=device)
        weights[-cfg.last_frames:] = cfg.last_frames_weight
        loss = (per_frame * weights).sum() / (weights.sum() * b)
        with torch.no_grad():
            stats = {
                "loss": loss.detach(),
                "mse": per_frame.mean(),
                "mse_last": per_frame[:, -cfg.last_frames:].mean(),
                "sigma": sigma.mean(),
            }
            stats = {k: float(v) for k, v in stats.items()}
        return loss, stats
