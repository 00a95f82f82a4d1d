"""The DyStream generator network: two causal audio encoders, a frame transformer, a flow head.

Frame t of the output is sampled from the flow head conditioned on c_t, which the
transformer computes from the previous motion frame, the fused audio features of
frame t (self and other, each up to its lookahead) and the anchor frame. Motion
is modelled in normalised units ((m - mean) / std, buffers saved with the
weights) and, with ``cfg.pose_relative``, with the head pose taken relative to the
anchor's (``to_model``; sampling adds the anchor's pose back, ``pose_shift``).

This module holds the network and its conditioning only. Sampling frame by frame
is :mod:`dystream.generator.sampling`; the training objective (loss, auxiliary
heads) is :mod:`dystream.training.recipe`.
"""

from __future__ import annotations

import torch
from torch import nn

from dystream.config import OTHER, SELF
from dystream.generator.audio_encoder import CausalAudioEncoder
from dystream.generator.config import GeneratorConfig
from dystream.generator.flow_head import FlowHead
from dystream.generator.transformer import FrameTransformer
from dystream.motion import POSE_SLICE


class Generator(nn.Module):
    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.self_encoder = CausalAudioEncoder(cfg, stream=SELF)
        self.other_encoder = CausalAudioEncoder(cfg, stream=OTHER)
        self.transformer = FrameTransformer(cfg)
        self.head = FlowHead(cfg.motion_dim, cfg.width, cfg.head_width, cfg.head_blocks)
        # Dropped conditions (guidance, condition dropout) are these learned null embeddings.
        self.null_self = nn.Parameter(torch.zeros(cfg.audio_width))
        self.null_other = nn.Parameter(torch.zeros(cfg.audio_width))
        self.null_anchor = nn.Parameter(torch.zeros(cfg.width))
        self.register_buffer("motion_mean", torch.zeros(cfg.motion_dim))
        self.register_buffer("motion_std", torch.ones(cfg.motion_dim))
        # 1 on the channels modelled relative to the anchor (none unless cfg.pose_relative).
        relative = torch.zeros(cfg.motion_dim)
        if cfg.pose_relative:
            relative[POSE_SLICE] = 1.0
        self.register_buffer("relative_mask", relative, persistent=False)

    @property
    def encoders(self) -> tuple[CausalAudioEncoder, CausalAudioEncoder]:
        """(self encoder, other encoder), indexed by stream (``dystream.config.SELF`` / ``OTHER``)."""
        return self.self_encoder, self.other_encoder

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

    def pose_shift(self, anchor: torch.Tensor) -> torch.Tensor:
        """What is subtracted from raw motion before normalising: the anchor's pose
        channels with ``cfg.pose_relative``, zeros otherwise (same shape as anchor)."""
        return anchor * self.relative_mask.to(anchor.dtype)

    def to_model(self, motion: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """Raw motion [.., D] -> the model's units, relative to ``anchor`` (broadcastable)."""
        return self.normalise(motion - self.pose_shift(anchor))

    @property
    def device(self) -> torch.device:
        """Where the transformer and head live (the audio encoders may differ in dtype)."""
        return self.null_anchor.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the transformer and head, which sampling computes in."""
        return self.null_anchor.dtype

    def set_encoder_dtype(self, dtype: torch.dtype) -> Generator:
        """Run both audio encoders in ``dtype`` (weights and state); they still take and return
        the caller's dtype. float64 on the CPU makes one frame per call equal a whole clip per
        call: in float32 their matmuls round differently, which the trained rollout amplifies
        to ~1e-5 in motion."""
        self.self_encoder.to(dtype)
        self.other_encoder.to(dtype)
        return self

    # -- conditioning ------------------------------------------------------
    def audio_context(self) -> tuple[int, int]:
        """(left, right): samples needed before frame t0 and after the last frame of a
        training window: the mel window's overhang and front context plus the causal
        encoder layers' receptive field, and the larger lookahead."""
        cfg = self.cfg
        left = cfg.front_left_samples + cfg.encoder_context_frames * cfg.samples_per_frame
        return left, max(cfg.lookahead_samples(SELF), cfg.lookahead_samples(OTHER))

    def anchor_token(self, anchor_normalised: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """anchor [B, D] (model units), keep [B] bool -> anchor tokens [B, 1, width]."""
        token = self.transformer.anchor_in(anchor_normalised)
        return torch.where(keep[:, None], token, self.null_anchor.to(token.dtype))[:, None]

    def fuse_audio(self, self_features: torch.Tensor, other_features: torch.Tensor,
                   keep_self: torch.Tensor, keep_other: torch.Tensor) -> torch.Tensor:
        """Features [.., A] of both streams -> the fused audio [.., width]; where keep [..] is
        False a stream's features are its learned null embedding (guidance, condition dropout)."""
        self_features = torch.where(keep_self[..., None], self_features, self.null_self.to(self_features.dtype))
        other_features = torch.where(keep_other[..., None], other_features, self.null_other.to(other_features.dtype))
        return self.transformer.audio_fuse(torch.cat([self_features, other_features], dim=-1))

    # -- growing trained weights ------------------------------------------
    def widen_lookahead(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A state dict of this model with a shorter lookahead on either stream -> one that
        loads into this model and computes the same function (the new lookahead frames
        start with zero weights). Anything else passes unchanged."""
        state = dict(state)
        for name, encoder in (("self_encoder", self.self_encoder), ("other_encoder", self.other_encoder)):
            key = f"{name}.front.weight"
            if key not in state or state[key].shape == encoder.front.weight.shape:
                continue
            weight, n_mels, kernel = state[key], self.cfg.n_mels, encoder.front_kernel
            if weight.shape[0] != encoder.front.weight.shape[0] or weight.shape[1] % n_mels:
                raise ValueError(f"front weight {tuple(weight.shape)} does not fit this encoder "
                                 f"({tuple(encoder.front.weight.shape)})")
            old_kernel = weight.shape[1] // n_mels
            if old_kernel > kernel:
                raise ValueError(f"the weights read {old_kernel - kernel} more lookahead mel frames than "
                                 "this encoder; a lookahead can grow from trained weights, not shrink")
            grown = weight.new_zeros(weight.shape[0], n_mels, kernel)
            grown[:, :, :old_kernel] = weight.unflatten(1, (n_mels, old_kernel))  # flattened [M, K], K fastest
            state[key] = grown.flatten(1)
        return state

    def deepen_audio_encoders(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A state dict of this model whose audio encoders have fewer blocks -> one that loads
        into this model and computes the same function: each new block follows the trained
        ones (before the output norm) as this model initialised it, but with the output layer
        of its MLP zeroed, so its residual adds nothing until training moves it. Anything else
        passes unchanged; a file with more blocks than this model is refused."""
        state = dict(state)
        for name, encoder in (("self_encoder", self.self_encoder), ("other_encoder", self.other_encoder)):
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
