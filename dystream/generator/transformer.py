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
fixed ring of W keys/values per layer. Rotary frequencies are whole turns per
period P = 2W, so rotating by (position mod P) gives the same relative angles as
the raw position: positions stay small numbers for hours of audio, keys are
rotated once when written, and both paths compute the same function. Stacked
layers see L (W - 1) frames back in all; the cost per frame stays constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dystream.generator.config import GeneratorConfig


def rotary_frequencies(dim: int, period: int) -> torch.Tensor:
    """dim/2 angular frequencies, each a whole number of turns per ``period`` frames.

    Wavelengths run geometrically from ``period`` frames down to about 2. Because
    every frequency repeats after ``period`` frames, rotating by position mod period
    gives exactly the same relative angles as the raw position: positions stay small
    however long a stream runs, and keys can be rotated once, when they are written.
    """
    half = dim // 2
    turns = torch.round(torch.logspace(0, torch.log10(torch.tensor(period / 2.0)).item(), half,
                                       dtype=torch.float64))
    for i in range(1, half):  # strictly increasing whole numbers of turns
        turns[i] = max(turns[i].item(), turns[i - 1].item() + 1)
    return 2 * torch.pi * turns / period


def rotary_tables(positions: torch.Tensor, dim: int, period: int, dtype=torch.float32):
    """cos/sin [len(positions), dim/2] for integer positions (taken mod period)."""
    freqs = rotary_frequencies(dim, period).to(positions.device)
    angles = (positions.to(torch.int64) % period).to(torch.float64)[:, None] * freqs[None]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :d/2], x[..., d/2:]) by the given angles."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def attend(q_rotated, q_plain, keys, values, anchor_k, anchor_v, mask, dropout_p=0.0, training=False):
    """Attention over [anchor] + frames. The anchor has no position, so its logit uses the
    unrotated query; frame logits use rotary-rotated queries and keys. mask [T, S] bool."""
    scale = q_plain.shape[-1] ** -0.5
    anchor_logits = (q_plain @ anchor_k.transpose(-1, -2)) * scale  # [B, h, T, 1]
    frame_logits = (q_rotated @ keys.transpose(-1, -2)) * scale  # [B, h, T, S]
    frame_logits = frame_logits.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(torch.cat([anchor_logits, frame_logits], dim=-1), dim=-1)
    if training and dropout_p > 0:
        weights = F.dropout(weights, dropout_p, training)
    return weights[..., :1] * anchor_v + weights[..., 1:] @ values


@dataclass
class TransformerCache:
    """Ring KV cache. Slot 0 of each layer holds the anchor; slots 1..W the last W frames.

    Frame keys are stored rotated by (frame mod period); the anchor key is re-rotated
    each step to the query's angle, so its logit is position-free.
    """

    keys: torch.Tensor  # [layers, B, heads, 1 + W, head_dim]
    values: torch.Tensor
    anchor_keys: torch.Tensor  # [layers, B, heads, 1, head_dim], unrotated
    frame: int = 0  # index of the next frame to be written


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
        if self.training and self.dropout > 0:
            x = x + F.dropout(self.proj(attended), self.dropout, True)
            return x + F.dropout(self.mlp(self.mlp_norm(x)), self.dropout, True)
        x = x + self.proj(attended)
        return x + self.mlp(self.mlp_norm(x))

    def forward(self, x, anchor_token, cos, sin, mask):
        q, k, v = self._split(self.attn_norm(x))
        ka, va = self.anchor_kv(anchor_token)
        attended = attend(rotate(q, cos, sin), q, rotate(k, cos, sin), v, ka, va, mask, self.dropout, self.training)
        return self._finish(x, attended)

    def step(self, x, layer_keys, layer_values, slot, cos, sin, mask):
        """One frame. layer_keys/values [B, h, 1 + W, d] with the anchor (already at this
        frame's angle) in slot 0; the new frame goes to ``slot``."""
        b = x.shape[0]
        qkv = self.qkv(self.attn_norm(x)).view(b, 3, self.heads, self.head_dim)
        qk = rotate(qkv[:, :2], cos, sin)  # query and key share the frame's angle
        layer_keys[:, :, slot] = qk[:, 1]
        layer_values[:, :, slot] = qkv[:, 2]
        attended = F.scaled_dot_product_attention(qk[:, 0, :, None], layer_keys, layer_values, attn_mask=mask)
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
        self.head_dim = cfg.width // cfg.heads
        self.rotary_period = 2 * cfg.window
        cos, sin = rotary_tables(torch.arange(self.rotary_period), self.head_dim, self.rotary_period)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("slot_index", torch.arange(1 + cfg.window), persistent=False)

    def fuse_audio(self, self_features: torch.Tensor, other_features: torch.Tensor) -> torch.Tensor:
        return self.audio_fuse(torch.cat([self_features, other_features], dim=-1))

    def forward(self, prev_motion, fused_audio, anchor_token):
        """prev_motion [B, T, D] (normalised), fused_audio [B, T, H], anchor_token [B, 1, H] -> [B, T, H].

        Frames attend to at most the W most recent frames (banded causal mask).
        """
        t = prev_motion.shape[1]
        positions = torch.arange(t, device=prev_motion.device)
        cos = self.rope_cos[positions % self.rotary_period].to(prev_motion.dtype)
        sin = self.rope_sin[positions % self.rotary_period].to(prev_motion.dtype)
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
        shape = (len(self.blocks), b, self.cfg.heads, 1 + self.cfg.window, self.head_dim)
        keys, values = anchor_token.new_zeros(shape), anchor_token.new_zeros(shape)
        anchor = [blk.anchor_kv(anchor_token) for blk in self.blocks]
        values[:, :, :, :1] = torch.stack([v for _, v in anchor])
        return TransformerCache(keys=keys, values=values, anchor_keys=torch.stack([k for k, _ in anchor]))

    def step(self, prev_motion: torch.Tensor, fused_audio: torch.Tensor, cache: TransformerCache) -> torch.Tensor:
        """One frame: prev_motion [B, 1, D], fused_audio [B, 1, H] -> c_t [B, 1, H]; advances the cache.

        Attends to the anchor and the W most recent frames (the banded mask of ``forward``).
        """
        w, frame = self.cfg.window, cache.frame
        angle = frame % self.rotary_period
        cos, sin = self.rope_cos[angle], self.rope_sin[angle]
        # The anchor key turns with the query, so their dot product does not depend on the frame.
        cache.keys[:, :, :, 0] = rotate(cache.anchor_keys[:, :, :, 0], cos, sin)
        # Slot 0 is the anchor; frame f lives in slot 1 + f mod W. Valid: anchor + frames written.
        mask = None if frame >= w - 1 else (self.slot_index <= frame + 1)[None]
        x = self.motion_in(prev_motion)
        slot = 1 + frame % w
        for i, block in enumerate(self.blocks):
            x = block.step(x + fused_audio, cache.keys[i], cache.values[i], slot, cos, sin, mask)
        cache.frame = frame + 1
        return self.out_norm(x)
