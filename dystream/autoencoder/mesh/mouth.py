"""Synthesised mouth interior: dark cavity, upper and lower teeth, tongue.

Drawn between the warped inner lip contours wherever the lips part further than
they do in the photo (so the photo's own mouth is untouched at its own motion).
Everything is computed in the mouth's own frame (u along the corners, v across),
per pixel of a fixed window around the mouth, batched over frames.
:func:`composite_mouth` paints the frames of one photo; :func:`composite_mouth_batch`
frames of several photos, each with its own window (same arithmetic per pixel).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch

from dystream.autoencoder.mesh.window import Windows

# Colours of the interior relative to the photo's skin brightness (RGB, 0..1).
CAVITY = (0.22, 0.07, 0.07)
TEETH = (0.93, 0.90, 0.84)
TONGUE = (0.58, 0.26, 0.27)
UPPER_TEETH_HEIGHT = 0.11   # of the mouth width
LOWER_TEETH_HEIGHT = 0.07
FADE_IN = 0.04              # extra opening (of mouth width) over which the interior fades in


def _interp(query: torch.Tensor, knots_x: torch.Tensor, knots_y: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear y(query) for each row: query [T, P], knots [T, K] (x increasing)."""
    knots_x = torch.cummax(knots_x, dim=1).values.contiguous()
    index = torch.searchsorted(knots_x, query.contiguous()).clamp(1, knots_x.shape[1] - 1)
    x0, x1 = knots_x.gather(1, index - 1), knots_x.gather(1, index)
    y0, y1 = knots_y.gather(1, index - 1), knots_y.gather(1, index)
    w = ((query - x0) / (x1 - x0).clamp_min(1e-6)).clamp(0, 1)
    return y0 + w * (y1 - y0)


@lru_cache(maxsize=None)
def _palette(device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The interior colours as tensors on ``device``, made once (no host copy per call)."""
    with torch.inference_mode(False):
        return {name: torch.tensor(rgb, device=device, dtype=dtype)
                for name, rgb in (("cavity", CAVITY), ("teeth", TEETH), ("tongue", TONGUE))}


class _MouthFrame(NamedTuple):
    """Per frame: the right corner [T, 2], unit axes e_u, e_v [T, 2], the width [T, 1],
    the lip contours in (u, v) [T, K] each, and the extra opening over the photo's [T, K]."""

    right: torch.Tensor
    e_u: torch.Tensor
    e_v: torch.Tensor
    width: torch.Tensor
    up_u: torch.Tensor
    up_v: torch.Tensor
    lo_u: torch.Tensor
    lo_v: torch.Tensor
    extra: torch.Tensor


def _mouth_frame(upper: torch.Tensor, lower: torch.Tensor, rest_opening: torch.Tensor) -> _MouthFrame:
    """The mouth's own frame from the inner lips [T, K, 2]; rest_opening [K] or [T, K]."""
    right, left = upper[:, 0], upper[:, -1]                         # corners
    axis = left - right
    width = axis.norm(dim=-1, keepdim=True).clamp_min(1.0)          # [T, 1]
    e_u = axis / width
    e_v = torch.stack([-e_u[:, 1], e_u[:, 0]], -1)
    up_rel, lo_rel = upper - right[:, None], lower - right[:, None]
    up_u = (up_rel * e_u[:, None]).sum(-1) / width
    up_v = (up_rel * e_v[:, None]).sum(-1)
    lo_u = (lo_rel * e_u[:, None]).sum(-1) / width
    lo_v = (lo_rel * e_v[:, None]).sum(-1)
    extra = (lo_v - up_v) - rest_opening                            # [T, K] how much wider than the photo
    return _MouthFrame(right, e_u, e_v, width, up_u, up_v, lo_u, lo_v, extra)


def _coverage(mouth: _MouthFrame, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """pixels [1 or T, P, 2] (x, y) -> alpha [T, P] of the interior, and the pixels'
    (u, v, v_up, v_lo) in the mouth frame [T, P] each, for :func:`_shade`."""
    rel = pixels - mouth.right[:, None]                             # [T, P, 2]
    u = (rel * mouth.e_u[:, None]).sum(-1) / mouth.width            # 0 .. 1 corner to corner
    v = (rel * mouth.e_v[:, None]).sum(-1)                          # pixels across
    v_up = _interp(u, mouth.up_u, mouth.up_v)
    v_lo = _interp(u, mouth.lo_u, mouth.lo_v)
    extra_at = _interp(u, mouth.up_u, mouth.extra)
    inside = ((v - v_up) + 0.5).clamp(0, 1) * ((v_lo - v) + 0.5).clamp(0, 1)
    inside = inside * (u * mouth.width).clamp(0, 1) * ((1 - u) * mouth.width).clamp(0, 1)
    alpha = inside * (extra_at / (FADE_IN * mouth.width)).clamp(0, 1)
    return alpha, (u, v, v_up, v_lo)


def _shade(mouth: _MouthFrame, where: tuple[torch.Tensor, ...], brightness: torch.Tensor) -> torch.Tensor:
    """Colour [T, P, 3] (0..255) of cavity, tongue and teeth at the pixels ``where``
    (from :func:`_coverage`); brightness: a scalar tensor or [T, 1]."""
    u, v, v_up, v_lo = where
    width, dt = mouth.width, u.dtype
    palette = _palette(u.device, dt)
    colour = lambda name: palette[name] * brightness * 255  # noqa: E731
    depth = torch.sin(torch.pi * u.clamp(0, 1)).clamp_min(0) ** 0.5  # darker towards the corners
    opening = (v_lo - v_up).clamp_min(1e-3)
    out = colour("cavity")[..., None, :] * (0.6 + 0.4 * depth)[..., None]
    # Tongue: a hump rising from the floor of the mouth, behind the lower teeth.
    tongue = (((u - 0.5) / 0.30) ** 2 + ((v - v_lo) / (0.38 * opening)) ** 2 < 1).to(dt)
    tongue_shade = (0.5 + 0.5 * (1 - (v_lo - v) / (0.38 * opening)).clamp(0, 1)) * (0.6 + 0.4 * depth)
    out = out + tongue[..., None] * (colour("tongue")[..., None, :] * tongue_shade[..., None] - out)
    # Teeth: bands hanging from the upper lip and standing on the lower lip, with faint gaps.
    gaps = 0.82 + 0.18 * torch.cos(torch.pi * (u - 0.5) * 9).abs() ** 0.25
    span = ((u - 0.12) / 0.06).clamp(0, 1) * ((0.88 - u) / 0.06).clamp(0, 1)
    upper_h = UPPER_TEETH_HEIGHT * width
    upper_t = (((v_up + upper_h) - v) / 1.0).clamp(0, 1) * span
    upper_shade = (1.0 - 0.35 * ((v - v_up) / upper_h).clamp(0, 1)) * gaps * (0.7 + 0.3 * depth)
    lower_span = ((u - 0.22) / 0.06).clamp(0, 1) * ((0.78 - u) / 0.06).clamp(0, 1)
    lower_h = LOWER_TEETH_HEIGHT * width
    lower_t = ((v - (v_lo - lower_h)) / 1.0).clamp(0, 1) * lower_span
    lower_shade = (0.85 - 0.3 * ((v_lo - v) / lower_h).clamp(0, 1)) * gaps * (0.7 + 0.3 * depth)
    teeth = colour("teeth")[..., None, :]
    out = out + lower_t[..., None] * (teeth * lower_shade[..., None] - out)
    return out + upper_t[..., None] * (teeth * upper_shade[..., None] - out)


def _blend(region: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """region [T, 3, h, w] with alpha [T, h*w] of colour [T, h*w, 3] over it."""
    painted = colour.permute(0, 2, 1).reshape(region.shape)
    a = alpha.reshape(region.shape[0], 1, *region.shape[2:])
    return region + a * (painted - region)


def composite_mouth(frames: torch.Tensor, upper: torch.Tensor, lower: torch.Tensor,
                    rest_opening: torch.Tensor, window: tuple[int, int, int, int],
                    brightness: torch.Tensor) -> torch.Tensor:
    """Paint the interior into ``frames`` [T, 3, S, S] (float 0..255) in place and return it.

    upper/lower: inner lip contours [T, K, 2] in output pixels, corner to corner and
    paired point by point; rest_opening [K] the photo's own gap between the pairs;
    window (row0, row1, col0, col1) where the mouth can be; brightness: a scalar
    tensor scaling the colours to the photo's light.
    """
    row0, row1, col0, col1 = window
    if row1 <= row0 or col1 <= col0:
        return frames
    dev, dt = frames.device, frames.dtype
    mouth = _mouth_frame(upper, lower, rest_opening)
    if not bool((mouth.extra > 0).any()):                           # lips no further apart than in the photo
        return frames
    rows = torch.arange(row0, row1, device=dev, dtype=dt) + 0.5
    cols = torch.arange(col0, col1, device=dev, dtype=dt) + 0.5
    py, px = torch.meshgrid(rows, cols, indexing="ij")
    pixels = torch.stack([px.ravel(), py.ravel()], -1)[None]        # [1, P, 2]
    alpha, where = _coverage(mouth, pixels)
    if not bool((alpha > 0).any()):
        return frames
    region = frames[:, :, row0:row1, col0:col1]
    frames[:, :, row0:row1, col0:col1] = _blend(region, alpha, _shade(mouth, where, brightness))
    return frames


def composite_mouth_batch(frames: torch.Tensor, upper: torch.Tensor, lower: torch.Tensor, photo: torch.Tensor,
                          frame: torch.Tensor, rest_opening: torch.Tensor, windows: Windows, brightness: torch.Tensor,
                          skip_closed: bool = False) -> torch.Tensor:
    """Like :func:`composite_mouth` for frames of B photos, in place.

    frames [B, T, 3, S, S] (any strides); upper/lower [M, K, 2] (output pixels) of the
    M frames (photo[m], frame[m]); per photo: rest_opening [B, K], windows (one per
    photo, :class:`Windows`), brightness [B]. With ``skip_closed`` only frames whose
    lips part further than in their photo are painted: one host sync (cheap on a
    CPU, a stall on a GPU). The result is the same either way, as alpha is 0 in the
    other frames.
    """
    if windows.empty:
        return frames
    mouth = _mouth_frame(upper, lower, rest_opening[photo])
    if skip_closed:
        keep = (mouth.extra > 0).any(-1).nonzero()[:, 0]
        if len(keep) == 0:
            return frames
        if len(keep) < len(photo):
            mouth, photo, frame = _MouthFrame(*(t[keep] for t in mouth)), photo[keep], frame[keep]
    x, y = windows.centres(photo, frames.dtype)
    alpha, where = _coverage(mouth, torch.stack([x, y], -1))
    alpha = alpha * windows.inside[photo].flatten(1)
    colour = _shade(mouth, where, brightness[photo].reshape(-1, 1))
    return windows.scatter(frames, photo, frame, _blend(windows.gather(frames, photo, frame), alpha, colour))
