"""Causal transformer over motion frames with a sliding window and a ring KV cache.

Per frame t the input is the previous motion frame (projected) plus the fused
self/other audio feature of frame t, which is added again at the start of every
block (frame-aligned, as in the paper). Each block is pre-norm self-attention
followed by an MLP. Attention keys are:

* the anchor token: the projected anchor motion, turned into a key/value by the
  block's own projection, with no position (always visible, the same at every
  frame), and
* the frames t-W+1 .. t, with rotary *relative* positions.

Deviation from the paper: DyStream has a second self-attention with absolute
positions and a separate cross-attention to the anchor. Absolute positions do not
survive a stream of unbounded length (they leave the trained range after W
frames), and cross-attention to a single token is only a per-layer linear map of
the anchor. Here the anchor is one more key in the relative-position attention,
so the model weighs anchor against recent history, and the window W bounds both
the positions it ever sees and the cost per frame.

One attention (``Block.forward``) serves both uses: a window of frames at once
(training: a banded causal mask over the window's own keys) and one frame per
stream (inference: the frame's key and value are written into a fixed ring of W
slots per layer, which it then attends to). Rotary frequencies are whole turns
per period P = 2W, so rotating by (position mod P) gives the same relative angles
as the raw position: positions stay small numbers for hours of audio and keys are
rotated once, when written. The anchor's key is turned to the query's angle, so
its logit does not depend on the position. Stacked layers see L (W - 1) frames
back in all; the cost per frame stays constant.
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
    gives exactly the same relative angles as the raw position.
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


@dataclass
class RingCache:
    """The keys and values of the last W frames of R rows, per layer.

    Slot 0 of each layer holds the anchor (its key turned to the current query's angle
    at every step); frame f of a row lives in slot 1 + f mod W, its key rotated by
    (f mod P). Rows may be at different frames: the step takes each row's index."""

    keys: torch.Tensor  # [layers, R, heads, 1 + W, head_dim]
    values: torch.Tensor
    anchor_keys: torch.Tensor  # [layers, R, heads, head_dim], unrotated

    def rows(self, count: int) -> "RingCache":
        """The first ``count`` rows (views: writes go into this cache)."""
        return RingCache(self.keys[:, :count], self.values[:, :count], self.anchor_keys[:, :count])


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
        # Rates set by the training recipe (dystream.training.recipe); 0 for inference.
        self.dropout = nn.Dropout(0.0)
        self.attention_dropout = 0.0

    def anchor_kv(self, anchor_token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor tokens [B, 1, H] -> this block's (key, value) of the anchor, [B, heads, 1, d] each."""
        qkv = self.qkv(self.attn_norm(anchor_token)).view(anchor_token.shape[0], 3, self.heads, self.head_dim)
        return qkv[:, 1, :, None], qkv[:, 2, :, None]

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor,
                values: torch.Tensor, mask: torch.Tensor,
                slot: tuple[torch.Tensor, torch.Tensor] | None = None,
                commit: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, H] -> [B, T, H]; ``cos``/``sin``: the frames' rotary angles, broadcasting
        against [B, T, 2, heads, d/2].

        Window (``slot`` None): ``keys`` / ``values`` [B, heads, T, d] are the anchor's, its key
        turned to each query's angle, and the window's frames are appended to them here.
        Ring (``slot`` = (rows [B], slots [B]), T = 1): ``keys`` / ``values`` are the ring [B,
        heads, 1 + W, d] with the anchor (turned to the query's angle) in slot 0; each row's
        frame key and value are written into its slot. ``mask`` [.., T, keys] says which keys
        each query sees. ``commit`` [B] bool: only these rows write the ring (the others keep
        their slot as it was; their output is computed all the same)."""
        b, t, _ = x.shape
        qkv = self.qkv(self.attn_norm(x)).view(b, t, 3, self.heads, self.head_dim)
        qk = rotate(qkv[:, :, :2], cos, sin)  # query and key share the frame's angle
        q = qk[:, :, 0].transpose(1, 2)  # [B, heads, T, d]
        if slot is None:
            keys = torch.cat([keys, qk[:, :, 1].transpose(1, 2)], dim=2)
            values = torch.cat([values, qkv[:, :, 2].transpose(1, 2)], dim=2)
        else:
            key, value = qk[:, 0, 1], qkv[:, 0, 2]
            if commit is not None:
                key = torch.where(commit[:, None, None], key, keys[slot[0], :, slot[1]])
                value = torch.where(commit[:, None, None], value, values[slot[0], :, slot[1]])
            keys[slot[0], :, slot[1]] = key
            values[slot[0], :, slot[1]] = value
        p = self.attention_dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=p)
        h = self.proj(attended.transpose(1, 2).reshape(b, t, -1))
        x = x + (self.dropout(h) if self.training else h)  # (no module call per layer and frame)
        h = self.mlp(self.mlp_norm(x))
        return x + (self.dropout(h) if self.training else h)


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

    def _angles(self, positions: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [len, d/2] of integer positions [len] (taken mod the rotary period)."""
        angle = torch.remainder(positions, self.rotary_period)
        return self.rope_cos.index_select(0, angle).to(dtype), self.rope_sin.index_select(0, angle).to(dtype)

    def forward(self, prev_motion: torch.Tensor, fused_audio: torch.Tensor, anchor_token: torch.Tensor) -> torch.Tensor:
        """A window: prev_motion [B, T, D] (model units), fused_audio [B, T, H], anchor tokens
        [B, 1, H] -> c [B, T, H]. Frame t attends to the anchor and frames t-W+1 .. t."""
        b, t, _ = prev_motion.shape
        positions = torch.arange(t, device=prev_motion.device)
        cos, sin = self._angles(positions, prev_motion.dtype)
        distance = positions[:, None] - positions[None, :]
        # Query t sees its own copy of the anchor key (turned to its angle) and the band of frames.
        mask = torch.cat([torch.eye(t, dtype=torch.bool, device=prev_motion.device),
                          (distance >= 0) & (distance < self.cfg.window)], dim=1)
        x = self.motion_in(prev_motion)
        frame_angles = (cos[:, None, None], sin[:, None, None])  # [T, 1, 1, d/2] against [B, T, 2, h, d/2]
        for block in self.blocks:
            anchor_k, anchor_v = block.anchor_kv(anchor_token)
            anchor_keys = rotate(anchor_k, cos, sin)  # [B, h, T, d]: turned to each query's angle
            x = block(x + fused_audio, *frame_angles, anchor_keys, anchor_v.expand(-1, -1, t, -1), mask)
        return self.out_norm(x)

    # -- one frame per row ------------------------------------------------
    def empty_cache(self, rows: int, device=None, dtype=torch.float32) -> RingCache:
        """A ring for ``rows`` rows, anchors unset (``set_anchor``)."""
        shape = (len(self.blocks), rows, self.cfg.heads, 1 + self.cfg.window, self.head_dim)
        return RingCache(keys=torch.zeros(shape, device=device, dtype=dtype),
                         values=torch.zeros(shape, device=device, dtype=dtype),
                         anchor_keys=torch.zeros(shape[:3] + shape[4:], device=device, dtype=dtype))

    def set_anchor(self, cache: RingCache, rows: slice, anchor_token: torch.Tensor) -> None:
        """Each block's key and value of the anchor tokens [R, 1, H] into these rows of the ring
        (its value in slot 0; its key kept unrotated, turned to the query's angle per step)."""
        for i, block in enumerate(self.blocks):
            key, value = block.anchor_kv(anchor_token)
            cache.anchor_keys[i, rows] = key[:, :, 0]
            cache.values[i, rows, :, 0] = value[:, :, 0]

    def new_cache(self, anchor_token: torch.Tensor) -> RingCache:
        """An empty ring for rows whose anchor tokens are ``anchor_token`` [R, 1, H]."""
        cache = self.empty_cache(anchor_token.shape[0], anchor_token.device, anchor_token.dtype)
        self.set_anchor(cache, slice(0, anchor_token.shape[0]), anchor_token)
        return cache

    def step(self, prev_motion: torch.Tensor, fused_audio: torch.Tensor, cache: RingCache,
             frame: torch.Tensor, commit: torch.Tensor | None = None) -> torch.Tensor:
        """One frame per row: prev_motion [R, 1, D], fused_audio [R, 1, H], each row's frame
        index ``frame`` [R] (int64, a device tensor) -> c_t [R, 1, H]; writes the frame into
        the ring (only the rows ``commit`` [R] marks, when given). The same attention as
        ``forward`` over the anchor and the row's last W frames; every index comes from
        tensors, so a CUDA graph can replay it."""
        rows, half = frame.shape[0], self.head_dim // 2
        cos, sin = self._angles(frame, prev_motion.dtype)  # [R, d/2]
        # Anchor + frames written so far; from frame W-1 on the ring is full and this is all True.
        mask = (self.slot_index <= (frame + 1).view(rows, 1)).view(rows, 1, 1, -1)  # [R, 1, 1, 1 + W]
        slot = (torch.arange(rows, device=frame.device), 1 + torch.remainder(frame, self.cfg.window))
        # The anchor key turns with the query, so their dot product does not depend on the frame.
        cache.keys[:, :, :, 0] = rotate(cache.anchor_keys, cos.view(1, rows, 1, half), sin.view(1, rows, 1, half))
        frame_angles = (cos.view(rows, 1, 1, 1, half), sin.view(rows, 1, 1, 1, half))  # against [R, 1, 2, h, d/2]
        x = self.motion_in(prev_motion)
        for i, block in enumerate(self.blocks):
            x = block(x + fused_audio, *frame_angles, cache.keys[i], cache.values[i], mask, slot, commit)
        return self.out_norm(x)
