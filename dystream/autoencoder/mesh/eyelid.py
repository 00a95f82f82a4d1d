"""Closing lids: skin over the slit that a warped blink leaves, and a lash line.

The warp pulls the upper lid down, but squeezes the iris into the narrowing slit
instead of hiding it. As the eye closes past a third of its opening, the slit is
painted with lid skin (sampled above the eye in the photo) and the meeting line
darkened like lashes, fading in with the closure. :func:`composite_lid` paints one
eye over frames of one photo; :func:`composite_lid_batch` over frames of several
photos, each with its own window (same arithmetic per pixel).
"""

from __future__ import annotations

import math

import torch

from dystream.autoencoder.mesh.mouth import _interp
from dystream.autoencoder.mesh.window import Windows

FADE_START = 0.25    # closure (1 - opening / photo's opening) where the fill starts
FADE_FULL = 0.75     # closure where it is opaque
LASH_DARKEN = 0.35   # lash line brightness relative to the skin
LID_REACH_UP = 1.5   # skin band above the closing upper lid at full closure, x the photo's mean lid gap
LID_REACH_LOW = 1.2  # and below the lower lid


def _closure_strength(upper: torch.Tensor, lower: torch.Tensor, rest_opening: torch.Tensor) -> torch.Tensor:
    """[T] how opaque the lid is, 0..1, from the lid contours [T, K, 2] and the photo's
    opening (a scalar tensor or [T])."""
    opening = (lower[:, :, 1] - upper[:, :, 1]).clamp_min(0).sum(-1)            # [T]
    closure = 1 - opening / rest_opening.clamp_min(1e-3)
    return ((closure - FADE_START) / (FADE_FULL - FADE_START)).clamp(0, 1)


def _lid_cover(x: torch.Tensor, y: torch.Tensor, upper: torch.Tensor, lower: torch.Tensor,
               rest_opening: torch.Tensor, strength: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """At pixel centres x [T, P], y [1 or T, P]: the lid skin's alpha and the lash line's
    weight [T, P] each, both already scaled by the closure ``strength`` [T]."""
    y_up = _interp(x, upper[:, :, 0], upper[:, :, 1])
    y_lo = _interp(x, lower[:, :, 0], lower[:, :, 1])
    span = ((x - upper[:, :1, 0]) / 1.0).clamp(0, 1) * ((upper[:, -1:, 0] - x) / 1.0).clamp(0, 1)
    # Lid skin covers the slit and a band beyond each contour, where the squeezed iris
    # still shows (the warp pinches it into a dark line as the lids meet): a pixel and a
    # half, widening with the closure to a share of the photo's mean lid gap, so that a
    # closed eye shows no iris at all (MediaPipe reads any dark slit as an open eye).
    # The band tapers to nothing at the eye corners, so the painted lid has no box edges.
    gap = (rest_opening / upper.shape[1]).reshape(-1, 1)
    along = ((x - upper[:, :1, 0]) / (upper[:, -1:, 0] - upper[:, :1, 0]).clamp_min(1.0)).clamp(0, 1)
    taper = torch.sin(math.pi * along).clamp_min(0).sqrt() * strength[:, None]
    reach_up = 1.5 + taper * LID_REACH_UP * gap
    reach_lo = 1.5 + taper * LID_REACH_LOW * gap
    inside = ((y - y_up + reach_up) / reach_up).clamp(0, 1).sqrt() \
        * ((y_lo - y + reach_lo) / reach_lo).clamp(0, 1).sqrt() * span
    lash = torch.exp(-((y - y_lo) / 0.9) ** 2) * span
    return inside * strength[:, None], lash * strength[:, None]


def _paint_lid(region: torch.Tensor, alpha: torch.Tensor, lash: torch.Tensor, skin: torch.Tensor) -> torch.Tensor:
    """region [T, 3, h, w] under lid skin of alpha [T, h*w] and colour skin [1 or T, 3, 1, 1],
    darkened along the lash line (weight [T, h*w])."""
    shape = (region.shape[0], 1, *region.shape[2:])
    painted = region + alpha.reshape(shape) * (skin - region)
    darken = 1 - (1 - LASH_DARKEN) * lash.reshape(shape)
    return painted * darken


def composite_lid(frames: torch.Tensor, upper: torch.Tensor, lower: torch.Tensor, rest_opening: torch.Tensor,
                  window: tuple[int, int, int, int], skin: torch.Tensor) -> torch.Tensor:
    """Paint one eye's closing lid into ``frames`` [T, 3, S, S] (float 0..255) in place.

    upper/lower: lid contours [T, K, 2] in output pixels, corner to corner, paired;
    rest_opening: the photo's total opening (scalar tensor, pixels); window: (row0,
    row1, col0, col1) around the eye; skin: [3] lid colour 0..255.
    """
    row0, row1, col0, col1 = window
    if row1 <= row0 or col1 <= col0:
        return frames
    strength = _closure_strength(upper, lower, rest_opening)
    if not bool((strength > 0).any()):
        return frames
    dev, dt = frames.device, frames.dtype
    rows = torch.arange(row0, row1, device=dev, dtype=dt) + 0.5
    cols = torch.arange(col0, col1, device=dev, dtype=dt) + 0.5
    py, px = torch.meshgrid(rows, cols, indexing="ij")
    x, y = px.reshape(1, -1), py.reshape(1, -1)
    x = x.expand(upper.shape[0], -1)
    alpha, lash = _lid_cover(x, y, upper, lower, rest_opening, strength)
    region = frames[:, :, row0:row1, col0:col1]
    frames[:, :, row0:row1, col0:col1] = _paint_lid(region, alpha, lash, skin.view(1, 3, 1, 1))
    return frames


def composite_lid_batch(frames: torch.Tensor, upper: torch.Tensor, lower: torch.Tensor, photo: torch.Tensor,
                        frame: torch.Tensor, rest_opening: torch.Tensor, windows: Windows, skin: torch.Tensor,
                        skip_open: bool = False) -> torch.Tensor:
    """Like :func:`composite_lid` for one eye in frames of B photos, in place.

    frames [B, T, 3, S, S] (any strides); upper/lower [M, K, 2] (output pixels) of the
    M frames (photo[m], frame[m]); per photo: rest_opening [B], windows (one per photo,
    :class:`Windows`), skin [B, 3]. With ``skip_open`` only frames whose eye closes
    past the fade start are painted (one host sync); the result is the same either
    way, as an open eye gets alpha 0 and no lash.
    """
    if windows.empty:
        return frames
    rest = rest_opening[photo]
    strength = _closure_strength(upper, lower, rest)
    if skip_open:
        keep = (strength > 0).nonzero()[:, 0]
        if len(keep) == 0:
            return frames
        if len(keep) < len(photo):
            upper, lower, rest, strength = upper[keep], lower[keep], rest[keep], strength[keep]
            photo, frame = photo[keep], frame[keep]
    x, y = windows.centres(photo, frames.dtype)
    alpha, lash = _lid_cover(x, y, upper, lower, rest, strength)
    inside = windows.inside[photo].flatten(1)
    painted = _paint_lid(windows.gather(frames, photo, frame), alpha * inside, lash * inside,
                         skin[photo][:, :, None, None])
    return windows.scatter(frames, photo, frame, painted)
