"""Synthesised mouth interior: dark cavity, upper and lower teeth, tongue.

Drawn between the warped inner lip contours wherever the lips part further than
they do in the photo (so the photo's own mouth is untouched at its own motion).
Everything is computed in the mouth's own frame (u along the corners, v across),
per pixel of a fixed window around the mouth, batched over frames.
"""

from __future__ import annotations

import torch

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
    extra = (lo_v - up_v) - rest_opening[None]                      # [T, K] how much wider than the photo
    if not bool((extra > 0).any()):                                 # lips no further apart than in the photo
        return frames
    rows = torch.arange(row0, row1, device=dev, dtype=dt) + 0.5
    cols = torch.arange(col0, col1, device=dev, dtype=dt) + 0.5
    py, px = torch.meshgrid(rows, cols, indexing="ij")
    pixels = torch.stack([px.ravel(), py.ravel()], -1)             # [P, 2]
    rel = pixels[None] - right[:, None]                              # [T, P, 2]
    u = (rel * e_u[:, None]).sum(-1) / width                        # 0 .. 1 corner to corner
    v = (rel * e_v[:, None]).sum(-1)                                # pixels across
    v_up = _interp(u, up_u, up_v)
    v_lo = _interp(u, lo_u, lo_v)
    extra_at = _interp(u, up_u, extra)
    inside = ((v - v_up) + 0.5).clamp(0, 1) * ((v_lo - v) + 0.5).clamp(0, 1)
    inside = inside * (u * width).clamp(0, 1) * ((1 - u) * width).clamp(0, 1)
    alpha = inside * (extra_at / (FADE_IN * width)).clamp(0, 1)
    if not bool((alpha > 0).any()):
        return frames
    colour = lambda rgb: torch.tensor(rgb, device=dev, dtype=dt) * brightness * 255  # noqa: E731
    depth = torch.sin(torch.pi * u.clamp(0, 1)).clamp_min(0) ** 0.5  # darker towards the corners
    opening = (v_lo - v_up).clamp_min(1e-3)
    out = colour(CAVITY)[None, None] * (0.6 + 0.4 * depth)[..., None]
    # Tongue: a hump rising from the floor of the mouth, behind the lower teeth.
    tongue = (((u - 0.5) / 0.30) ** 2 + ((v - v_lo) / (0.38 * opening)) ** 2 < 1).to(dt)
    tongue_shade = (0.5 + 0.5 * (1 - (v_lo - v) / (0.38 * opening)).clamp(0, 1)) * (0.6 + 0.4 * depth)
    out = out + tongue[..., None] * (colour(TONGUE)[None, None] * tongue_shade[..., None] - out)
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
    teeth = colour(TEETH)[None, None]
    out = out + lower_t[..., None] * (teeth * lower_shade[..., None] - out)
    out = out + upper_t[..., None] * (teeth * upper_shade[..., None] - out)
    region = frames[:, :, row0:row1, col0:col1]
    painted = out.permute(0, 2, 1).reshape(region.shape)
    a = alpha.reshape(region.shape[0], 1, *region.shape[2:])
    frames[:, :, row0:row1, col0:col1] = region + a * (painted - region)
    return frames
