"""Causal transformer over motion frames with a sliding window and a ring KV cache.

Per frame t the input is the previous motion frame (projected) plus the fused
self/other audio feature of frame t, which is added again at the start of every
block (frame-aligned, as in the paper). Each block is pre-norm self-attention
followed by an MLP. Attention keys are:

* the anchor token: the projected anchor motion, turned into a key/value by the
  block's own projection, with no position (it is always visible; its logit uses
  the unrotated query, so it is the same at every frame), and
* the frames t-W+1 .. t, with rotary *relative* positions.

Deviation from the paper: DyStream has a second self-attention with absolute
positions and a separate cross-attention to the anchor. Absolute positions do not
survive a stream of unbounded length (they leave the trained range after W
frames), and cross-attention to a single token is only a per-layer linear map of
the anchor. Here the anchor is one more key in the relative-position attention,
so the model weighs anchor against recent history, and the window W bounds both
the positions it ever sees and the cost per frame.

Offline (``forward``) uses a banded causal mask; streaming (``step``) keeps a
fixed ring of W raw keys/values per layer and rotates them by their distance to
the query each step, so positions stay small numbers for hours of audio and both
paths compute the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dystream.generator.config import GeneratorConfig


def rotary_tables(length: int, dim: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [length, dim/2] for positions 0..length-1."""
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq[None]
    return angles.cos().to(device, dtype), angles.sin().to(device, dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :d/2], x[..., d/2:]) by the given angles."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


@dataclass
class TransformerCache:
    """Ring KV cache: raw (unrotated) keys/values of the last W frames per layer."""

    keys: torch.Tensor  # [layers, B, heads, W, head_dim]
    values: torch.Tensor
    anchor_keys: torch.Tensor  # [layers, B, heads, 1, head_dim]
    anchor_values: torch.Tensor
    frame: int = 0  # index of the next frame to be written


def attend(q_rotated, q_plain, keys, values, anchor_k, anchor_v, mask, dropout_p=0.0, training=False):
    """Attention over [anchor] + frames. The anchor has no position, so its logit uses the
    unrotated query; frame logits use rotary-rotated queries and keys. mask [T, S] bool."""
    scale = q_plain.shape[-1] ** -0.5
    anchor_logits = (q_plain @ anchor_k.transpose(-1, -2)) * scale  # [B, h, T, 1]
    frame_logits = (q_rotated @ keys.transpose(-1, -2)) * scale  # [B, h, T, S]
    frame_logits = frame_logits.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(torch.cat([anchor_logits, frame_logits], dim=-1), dim=-1)
    weights = F.dropout(weights, dropout_p, training)
    return weights[..., :1] * anchor_v + weights[..., 1:] @ values


class Block(nn.Module):
    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.width // cfg.heads
        self.attn_norm = nn.LayerNorm(cfg.width)
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.mlp_norm = nn.LayerNorm(cfg.width)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.width, cfg.mlp_ratio * cfg.width), nn.GELU(), nn.Linear(cfg.mlp_ratio * cfg.width, cfg.width)
        )
        self.dropout = cfg.dropout

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v  # each [B, heads, T, head_dim]

    def anchor_kv(self, anchor_token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, k, v = self._split(self.attn_norm(anchor_token))
        return k, v

    def _finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = attended.shape
        attended = attended.transpose(1, 2).reshape(b, t, -1)
        x = x + F.dropout(self.proj(attended), self.dropout, self.training)
        return x + F.dropout(self.mlp(self.mlp_norm(x)), self.dropout, self.training)

    def forward(self, x, anchor_token, cos, sin, mask):
        q, k, v = self._split(self.attn_norm(x))
        ka, va = self.anchor_kv(anchor_token)
        attended = attend(rotate(q, cos, sin), q, rotate(k, cos, sin), v, ka, va, mask, self.dropout, self.training)
        return self._finish(x, attended)

    def step(self, x, layer_keys, layer_values, anchor_k, anchor_v, slot, key_cos, key_sin, mask):
        q, k, v = self._split(self.attn_norm(x))  # [B, h, 1, d]
        layer_keys[:, :, slot] = k[:, :, 0]
        layer_values[:, :, slot] = v[:, :, 0]
        attended = attend(q, q, rotate(layer_keys, key_cos, key_sin), layer_values, anchor_k, anchor_v, mask)
        return self._finish(x, attended)


class FrameTransformer(nn.Module):
    """Previous motion + fused audio + anchor -> condition c_t [.., width] per frame."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.motion_in = nn.Linear(cfg.motion_dim, cfg.width)
        self.audio_fuse = nn.Linear(2 * cfg.audio_width, cfg.width)
        self.anchor_in = nn.Linear(cfg.motion_dim, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.out_norm = nn.LayerNorm(cfg.width)
        cos, sin = rotary_tables(cfg.window, cfg.width // cfg.heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def fuse_audio(self, self_features: torch.Tensor, other_features: torch.Tensor) -> torch.Tensor:
        return self.audio_fuse(torch.cat([self_features, other_features], dim=-1))

    def forward(self, prev_motion, fused_audio, anchor_token):
        """prev_motion [B, T, D] (normalised), fused_audio [B, T, H], anchor_token [B, 1, H] -> [B, T, H].

        Frames attend to at most the W most recent frames (banded causal mask).
        """
        t = prev_motion.shape[1]
        positions = torch.arange(t, device=prev_motion.device)
        cos, sin = rotary_tables(t, self.cfg.width // self.cfg.heads, prev_motion.device, prev_motion.dtype)
        distance = positions[:, None] - positions[None, :]
        mask = (distance >= 0) & (distance < self.cfg.window)
        x = self.motion_in(prev_motion)
        for block in self.blocks:
            x = block(x + fused_audio, anchor_token, cos, sin, mask)
        return self.out_norm(x)

    # -- incremental ------------------------------------------------------
    def new_cache(self, anchor_token: torch.Tensor) -> TransformerCache:
        """An empty ring for a batch whose anchor tokens are ``anchor_token`` [B, 1, H]."""
        b = anchor_token.shape[0]
        heads, head_dim, w = self.cfg.heads, self.cfg.width // self.cfg.heads, self.cfg.window
        shape = (len(self.blocks), b, heads, w, head_dim)
        anchor = [blk.anchor_kv(anchor_token) for blk in self.blocks]
        return TransformerCache(
            keys=anchor_token.new_zeros(shape), values=anchor_token.new_zeros(shape),
            anchor_keys=torch.stack([k for k, _ in anchor]), anchor_values=torch.stack([v for _, v in anchor]),
        )

    def step(self, prev_motion: torch.Tensor, fused_audio: torch.Tensor, cache: TransformerCache) -> torch.Tensor:
        """One frame: prev_motion [B, 1, D], fused_audio [B, 1, H] -> c_t [B, 1, H]; advances the cache."""
        w = self.cfg.window
        frame = cache.frame
        slot = frame % w
        # Distance of each ring slot's frame to the current one; a key at distance d
        # is rotated by -d (the query stays at position 0): the same relative angle
        # as the offline path, without positions that grow with the stream.
        slots = torch.arange(w, device=prev_motion.device)
        distance = (slot - slots) % w
        key_cos, key_sin = self.rope_cos[distance], -self.rope_sin[distance]
        mask = (distance <= frame)[None]
        x = self.motion_in(prev_motion)
        for i, block in enumerate(self.blocks):
            x = block.step(x + fused_audio, cache.keys[i], cache.values[i], cache.anchor_keys[i],
                           cache.anchor_values[i], slot, key_cos, key_sin, mask)
        cache.frame = frame + 1
        return self.out_norm(x)
