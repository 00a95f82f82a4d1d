"""Frame-by-frame sampling shared by offline generation and streaming sessions.

``Rollout`` owns everything that advances one frame for B independent streams
at once: the transformer's ring KV cache for each (stream, guidance branch) row,
the previous motion frame of each stream, the sampler's noise levels and the
flow-time terms (computed once, not per frame). Offline generation runs the
audio encoders over the whole clip in one call and then rolls out; a streaming
session runs the encoders incrementally and rolls out the same way, so both
produce the same motion for the same audio and seed.

Batching: the rows of one step are stream-major (stream b, branch i -> row
b * n + i). Every row's arithmetic is independent of the other rows (attention,
cache and noise are per row; noise depends only on the stream's seed and the
frame index), so a stream's motion does not depend on which other streams share
its batch, up to float rounding of matmuls whose blocking depends on the row
count (tested <= 1e-5).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dystream.errors import InputError
from dystream.generator.flow_head import euler_sample, sigma_schedule
from dystream.generator.guidance import _hash32, counter_noise, frame_noise, plan_guidance
from dystream.generator.model import Generator
from dystream.generator.transformer import FrameTransformer, TransformerCache, rotate


def seed_keys(seeds: torch.Tensor) -> torch.Tensor:
    """Per-stream noise keys [B] (int64) from seeds [B]: the key ``frame_noise`` derives from its seed."""
    return _hash32(seeds.to(torch.int64) * 0x9E3779B1 + 0x632BE5AB)


def keyed_frame_noise(keys: torch.Tensor, frame: torch.Tensor, channels: torch.Tensor,
                      dtype=torch.float32) -> torch.Tensor:
    """Noise [B, D] of frame ``frame`` ([1] or [B] int64 tensor) for streams with ``keys`` [B].

    The same numbers as ``frame_noise(seed_b, frame)`` row by row, but with the seed's key and
    the frame index as device tensors: no Python scalar becomes a tensor, so this can run inside
    a captured CUDA graph. ``channels`` = arange(D) as int64.
    """
    counter = frame.to(torch.int64)[:, None] * (2 * channels.shape[0]) + channels[None] * 2
    return counter_noise(counter, keys[:, None], dtype)


def _attend_one_query(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """Attention of one query per row [R, h, 1, d] over the ring [R, h, S, d]; mask [1, S] bool.

    On a CPU, explicit matmul + softmax: torch's fused CPU attention kernel spends most of
    a batched frame on a single-query problem (measured: 43% of a 32-stream step).
    """
    if query.device.type != "cpu":
        return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask)
    logits = (query @ keys.transpose(-1, -2)) * query.shape[-1] ** -0.5
    logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1) @ values


def ring_step(tr: FrameTransformer, cache: TransformerCache, previous_rows: torch.Tensor,
              fused: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """``FrameTransformer.step`` with the frame index a [1] int64 device tensor.

    The ring slot, the rotary angle and the ring's warm-up mask are computed from the tensor,
    so the same kernels run every frame (a CUDA graph can replay them). previous_rows
    [R, 1, D], fused [R, 1, H] -> c_t [R, 1, H]; writes the frame into the ring (the caller
    advances ``frame``; ``cache.frame`` is not used).
    """
    w = tr.cfg.window
    angle = torch.remainder(frame, tr.rotary_period)
    cos, sin = tr.rope_cos.index_select(0, angle), tr.rope_sin.index_select(0, angle)  # [1, d/2]
    # The anchor key turns with the query, so their dot product does not depend on the frame.
    cache.keys[:, :, :, 0] = rotate(cache.anchor_keys[:, :, :, 0], cos, sin)
    # Anchor + frames written so far; from frame W-1 on the ring is full and this is all True.
    mask = (tr.slot_index <= frame + 1)[None]
    slot = 1 + torch.remainder(frame, w)
    x = tr.motion_in(previous_rows)
    for i, block in enumerate(tr.blocks):
        h = x + fused
        rows = h.shape[0]
        qkv = block.qkv(block.attn_norm(h)).view(rows, 3, block.heads, block.head_dim)
        qk = rotate(qkv[:, :2], cos, sin)  # query and key share the frame's angle
        cache.keys[i].index_copy_(2, slot, qk[:, 1, :, None])
        cache.values[i].index_copy_(2, slot, qkv[:, 2, :, None])
        attended = _attend_one_query(qk[:, 0, :, None], cache.keys[i], cache.values[i], mask)
        x = block._finish(h, attended)
    return tr.out_norm(x)


class Rollout:
    """Autoregressive sampling of B streams, one frame per ``step``.

    ``anchor`` is one frame [D] (a single stream: ``step`` takes features [1, H] and
    returns motion [D], the streaming session's path) or [B, D] with ``seed`` a
    sequence of B seeds (``step`` takes [B, H] per stream and returns [B, D]). All
    guidance branches of all streams run as one batch; the noise of frame t of a
    stream depends only on (its seed, t). ``guidance`` / ``pose_guidance``: branch
    weights of every channel / of the head pose channels (``plan_guidance``; None:
    the defaults). Call inside ``torch.inference_mode()``.
    """

    def __init__(self, model: Generator, anchor, *, steps: int = 5, seed: int | Sequence[int] = 0,
                 guidance=None, pose_guidance=None) -> None:
        if steps < 1:
            raise InputError(f"steps must be >= 1, got {steps}")
        self.model, self.steps = model, int(steps)
        self.device, self.dtype = model.device, model.dtype
        self.plan = plan_guidance(guidance, pose_guidance)
        self.keep_self, self.keep_other, self.keep_anchor = self.plan.keep_masks(self.device)
        # [n], or [n, D] when the pose channels have their own coefficients.
        self.weights = self.plan.weight_tensor(self.device, self.dtype, model.cfg.motion_dim)
        anchor = torch.as_tensor(np.asarray(anchor, dtype=np.float32), device=self.device).to(self.dtype)
        d = model.cfg.motion_dim
        self.single = anchor.dim() == 1
        if self.single:
            if anchor.shape != (d,):
                raise InputError(f"anchor must have {d} values, got {tuple(anchor.shape)}")
            if not isinstance(seed, (int, np.integer)):
                raise InputError("one anchor frame takes one integer seed")
            anchor, seeds = anchor[None], [int(seed)]
        else:
            if anchor.dim() != 2 or anchor.shape[1] != d or anchor.shape[0] < 1:
                raise InputError(f"anchors must be [streams, {d}], got {tuple(anchor.shape)}")
            seeds = [int(s) for s in np.atleast_1d(np.asarray(seed))]
            if len(seeds) != anchor.shape[0]:
                raise InputError(f"{anchor.shape[0]} anchors need as many seeds, got {len(seeds)}")
        self.seeds = seeds
        self.seed = seeds[0]  # the single-stream seed (kept for callers of the one-stream API)
        # The raw anchor's pose shift (pose_relative models work relative to it) and the anchor
        # in the model's units: the first frame's context and the anchor token's input.
        self.shift = model.pose_shift(anchor)  # [B, D] raw
        self.anchor = model.to_model(anchor, anchor)  # [B, D]
        self.noise_keys = seed_keys(torch.tensor(seeds, dtype=torch.int64, device=self.device))
        self.channels = torch.arange(d, device=self.device, dtype=torch.int64)
        self.sigmas = sigma_schedule(self.steps, self.device, self.dtype)
        # Flow-time terms depend only on the step index: computed once per rollout.
        self.time_emb, time_mod = model.head.time_terms(self.sigmas[:-1])
        self.time_mod = [[tuple(t[i] for t in block) for block in time_mod] for i in range(self.steps)]
        self.reset()

    @property
    def streams(self) -> int:
        return self.anchor.shape[0]

    def reset(self) -> None:
        anchors = self.rows(self.anchor)
        tokens = self.model.anchor_token(anchors, self.keep_anchor.repeat(self.streams))
        self.cache = self.model.transformer.new_cache(tokens)
        # Before the first frame the face is at its anchor pose.
        self.previous = self.anchor[:, None]  # [B, 1, D]
        self.frame = 0

    def rows(self, per_stream: torch.Tensor) -> torch.Tensor:
        """[B, ...] -> [B * n, ...]: each stream's tensor repeated for its n guidance branches."""
        n, b = self.plan.size, per_stream.shape[0]
        if b == 1:  # the single-stream path: a broadcast view, as it always was
            return per_stream.expand(n, *per_stream.shape[1:])
        return per_stream[:, None].expand(b, n, *per_stream.shape[1:]).reshape(b * n, *per_stream.shape[1:])

    def keep_first(self, count: int) -> None:
        """Drop every stream after the first ``count`` (they have ended); the rest continue unchanged."""
        if not 1 <= count <= self.streams:
            raise ValueError(f"keep_first({count}) with {self.streams} streams")
        if count == self.streams:
            return
        rows = count * self.plan.size
        c = self.cache
        # Contiguous copies (once per shrink): the attention of every later frame reads them whole.
        c.keys, c.values = c.keys[:, :rows].contiguous(), c.values[:, :rows].contiguous()
        c.anchor_keys = c.anchor_keys[:, :rows].contiguous()
        self.anchor, self.previous = self.anchor[:count], self.previous[:count]
        self.shift = self.shift[:count]
        self.noise_keys, self.seeds = self.noise_keys[:count], self.seeds[:count]

    def condition_rows(self, self_features: torch.Tensor, other_features: torch.Tensor) -> torch.Tensor:
        """Features [B, H] of this frame -> fused audio [B * n, 1, H] with each branch's dropped conditions."""
        model, b = self.model, self.streams
        self_b = model.drop_audio(self.rows(self_features), self.keep_self.repeat(b), model.null_self)
        other_b = model.drop_audio(self.rows(other_features), self.keep_other.repeat(b), model.null_other)
        return model.transformer.fuse_audio(self_b, other_b)[:, None]

    def sample(self, condition: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Transformer output c_t [B * n, H] and noise [B, D] -> guided sample [B, D] (normalised)."""
        model, n, b = self.model, self.plan.size, self.streams
        cond, cond_mod = model.head.condition(condition)
        # Output modulation for every step at once: [steps, B * n, width] each.
        out_shift, out_scale = model.head.output_terms(cond[None], self.time_emb[:, None])

        def denoise(x: torch.Tensor, i: int) -> torch.Tensor:
            x0 = model.head.denoise(self.rows(x), cond_mod, self.time_mod[i], (out_shift[i], out_scale[i]))
            if b == 1:
                return self.plan.combine(x0, self.weights).view(1, -1)
            if n == 1:
                return x0
            return self.plan.combine(x0.view(b, n, -1), self.weights)  # [B, n, D] -> [B, D]

        return euler_sample(denoise, noise, self.sigmas)

    def step(self, self_features: torch.Tensor, other_features: torch.Tensor) -> torch.Tensor:
        """Features [B, H] of frame t for each stream -> motion of frame t in raw units:
        [D] for a single-stream rollout, [B, D] otherwise."""
        model = self.model
        fused = self.condition_rows(self_features, other_features)
        if self.single:  # the streaming session's path, unchanged
            condition = model.transformer.step(self.rows(self.previous), fused, self.cache)[:, 0]
            noise = frame_noise(self.seed, torch.tensor([self.frame], device=self.device),
                                model.cfg.motion_dim).to(self.device, self.dtype)
        else:
            frame = torch.full((1,), self.frame, dtype=torch.int64, device=self.device)
            condition = ring_step(model.transformer, self.cache, self.rows(self.previous), fused, frame)[:, 0]
            self.cache.frame += 1
            noise = keyed_frame_noise(self.noise_keys, frame, self.channels, self.dtype)
        sample = self.sample(condition, noise)  # [B, D] normalised
        self.previous = sample[:, None]
        self.frame += 1
        motion = model.denormalise(sample) + self.shift
        return motion[0] if self.single else motion


def _as_audio(audio, name: str) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise InputError(f"{name} must be mono [samples], got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise InputError(f"{name} contains NaN or infinite samples")
    return audio


def _frames_of(model: Generator, self_audio: np.ndarray) -> int:
    cfg = model.cfg
    num_frames = len(self_audio) // cfg.samples_per_frame
    if num_frames == 0:
        raise InputError(
            f"self audio is too short: {len(self_audio)} samples, at least {cfg.samples_per_frame} "
            f"(one {1000 // cfg.frames_per_second} ms frame) needed"
        )
    return num_frames


def encode_clip(model: Generator, self_audio: np.ndarray, other_audio: np.ndarray, num_frames: int, device):
    """Both streams' features [1, T, H] for a clip, in one call per encoder.

    Silence is assumed before the clip (zeros) and after it (the lookahead of the last frames).
    """
    cfg = model.cfg
    out = []
    for encoder, audio in ((model.self_encoder, self_audio), (model.other_encoder, other_audio)):
        need = encoder.samples_needed(num_frames)
        buffer = np.zeros(need, dtype=np.float32)
        usable = min(len(audio), need - cfg.front_left_samples)
        buffer[cfg.front_left_samples: cfg.front_left_samples + usable] = audio[:usable]
        tensor = torch.from_numpy(buffer)[None].to(device)
        out.append(encoder(tensor, num_frames))
    return out


def generate_motion(model: Generator, self_audio, other_audio, anchor, *, steps: int = 5, seed: int = 0,
                    guidance=None, pose_guidance=None, device="cpu") -> np.ndarray:
    """Motion [T, D] for a whole clip, T = len(self_audio) // 640.

    ``other_audio`` None means a silent partner; a shorter partner track is padded
    with silence, a longer one cut to the self track. ``guidance`` / ``pose_guidance``:
    see :mod:`dystream.generator.guidance` (None: the defaults).
    """
    plan_guidance(guidance, pose_guidance)  # bad weights fail before any work
    self_audio = _as_audio(self_audio, "self audio")
    num_frames = _frames_of(model, self_audio)
    other_audio = np.zeros(0, np.float32) if other_audio is None else _as_audio(other_audio, "other audio")
    was_training, threads = model.training, torch.get_num_threads()
    model.to(device).eval()
    try:
        with torch.inference_mode():
            self_features, other_features = encode_clip(model, self_audio, other_audio, num_frames, device)
            if torch.device(device).type == "cpu":
                # Batch-1 frame steps are small matmuls: handing them to a second thread costs
                # more than it saves (measured: several times slower on a busy 2-core CPU).
                torch.set_num_threads(1)
            rollout = Rollout(model, anchor, steps=steps, seed=seed, guidance=guidance,
                              pose_guidance=pose_guidance)
            frames = [rollout.step(self_features[:, t], other_features[:, t]) for t in range(num_frames)]
            return torch.stack(frames).float().cpu().numpy()
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)


def generate_motion_batch(model: Generator, items, *, steps: int = 5, guidance=None, pose_guidance=None,
                          device="cpu", batch_size: int | None = None,
                          threads: int | None = None) -> list[np.ndarray]:
    """Motion for many clips at once: ``items`` are (self_audio, other_audio, anchor, seed).

    Returns one array [T_i, D] per item, in order, T_i = len(self_audio_i) // 640; each
    equals ``generate_motion`` of that item alone (up to float rounding). Clips are
    sorted by length and rolled out at most ``batch_size`` streams at a time (all at
    once when None; chunks of equal size); a stream leaves the batch when its clip ends, so short clips cost only
    their own frames. ``threads`` sets torch's CPU threads for the rollout (default 1,
    as ``generate_motion``; more pays off only for large batches on an idle machine).
    """
    items = list(items)
    plan_guidance(guidance, pose_guidance)  # bad weights fail before any work
    if not items:
        return []
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    clips = []
    for k, item in enumerate(items):
        try:
            self_audio, other_audio, anchor, seed = item
        except (TypeError, ValueError):
            raise InputError(f"item {k} must be (self_audio, other_audio, anchor, seed)") from None
        self_audio = _as_audio(self_audio, f"self audio of item {k}")
        other_audio = np.zeros(0, np.float32) if other_audio is None else \
            _as_audio(other_audio, f"other audio of item {k}")
        anchor = np.asarray(anchor, dtype=np.float32)
        if anchor.shape != (model.cfg.motion_dim,):
            raise InputError(f"anchor of item {k} must have {model.cfg.motion_dim} values, got {anchor.shape}")
        clips.append((self_audio, other_audio, anchor, int(seed), _frames_of(model, self_audio)))
    order = sorted(range(len(clips)), key=lambda k: -clips[k][4])  # longest first
    # Chunks of equal size (66 items at batch_size 64: 33 + 33, not 64 + 2): a small
    # last chunk would run its frames at a fraction of the batched throughput.
    size = len(clips) if batch_size is None else int(batch_size)
    chunks = -(-len(clips) // size)
    size = -(-len(clips) // chunks)
    results: list[np.ndarray | None] = [None] * len(clips)
    was_training, old_threads = model.training, torch.get_num_threads()
    model.to(device).eval()
    try:
        with torch.inference_mode():
            if torch.device(device).type == "cpu":
                torch.set_num_threads(threads or 1)
            for start in range(0, len(order), size):
                chunk = order[start: start + size]
                for k, motion in zip(chunk, _rollout_chunk(model, [clips[k] for k in chunk], steps, guidance,
                                                           pose_guidance, device)):
                    results[k] = motion
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    return results  # type: ignore[return-value]


def _rollout_chunk(model: Generator, clips, steps: int, guidance, pose_guidance, device) -> list[np.ndarray]:
    """Clips sorted longest first -> their motion; the batch shrinks as clips end."""
    lengths = [c[4] for c in clips]
    longest = lengths[0]
    self_feats, other_feats = [], []
    for self_audio, other_audio, _, _, frames in clips:
        f_self, f_other = encode_clip(model, self_audio, other_audio, frames, device)
        self_feats.append(torch.nn.functional.pad(f_self[0], (0, 0, 0, longest - frames)))
        other_feats.append(torch.nn.functional.pad(f_other[0], (0, 0, 0, longest - frames)))
    self_feats, other_feats = torch.stack(self_feats), torch.stack(other_feats)  # [B, T, H]
    rollout = Rollout(model, np.stack([c[2] for c in clips]), steps=steps, seed=[c[3] for c in clips],
                      guidance=guidance, pose_guidance=pose_guidance)
    out = torch.zeros(len(clips), longest, model.cfg.motion_dim, device=rollout.device, dtype=rollout.dtype)
    active = len(clips)
    for t in range(longest):
        while lengths[active - 1] <= t:  # sorted: the streams that have ended are at the end
            active -= 1
        if active < rollout.streams:
            rollout.keep_first(active)
        out[:active, t] = rollout.step(self_feats[:active, t], other_feats[:active, t])
    out = out.float().cpu().numpy()
    return [out[b, :n] for b, n in enumerate(lengths)]
