"""Closing lids: skin over the slit that a warped blink leaves, and a lash line.

The warp pulls the upper lid down, but squeezes the iris into the narrowing slit
instead of hiding it. As the eye closes past a third of its opening, the slit is
painted with lid skin (sampled above the eye in the photo) and the meeting line
darkened like lashes, fading in with the closure.
"""

from __future__ import annotations

import math

import torch

from dystream.autoencoder.mesh.mouth import _interp

FADE_START = 0.25    # closure (1 - opening / photo's opening) where the fill starts
FADE_FULL = 0.75     # closure where it is opaque
LASH_DARKEN = 0.35   # lash line brightness relative to the skin
LID_REACH_UP = 1.5   # skin band above the closing upper lid at full closure, x the photo's mean lid gap
LID_REACH_LOW = 1.2  # and below the lower lid


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
    opening = (lower[:, :, 1] - upper[:, :, 1]).clamp_min(0).sum(-1)            # [T]
    closure = 1 - opening / rest_opening.clamp_min(1e-3)
    strength = ((closure - FADE_START) / (FADE_FULL - FADE_START)).clamp(0, 1)   # [T]
    if not bool((strength > 0).any()):
        return frames
    dev, dt = frames.device, frames.dtype
    rows = torch.arange(row0, row1, device=dev, dtype=dt) + 0.5
    cols = torch.arange(col0, col1, device=dev, dtype=dt) + 0.5
    py, px = torch.meshgrid(rows, cols, indexing="ij")
    x, y = px.reshape(1, -1), py.reshape(1, -1)
    frames_n = upper.shape[0]
    x = x.expand(frames_n, -1)
    y_up = _interp(x, upper[:, :, 0], upper[:, :, 1])
    y_lo = _interp(x, lower[:, :, 0], lower[:, :, 1])
    span = ((x - upper[:, :1, 0]) / 1.0).clamp(0, 1) * ((upper[:, -1:, 0] - x) / 1.0).clamp(0, 1)
    # Lid skin covers the slit and a band beyond each contour, where the squeezed iris
    # still shows (the warp pinches it into a dark line as the lids meet): a pixel and a
    # half, widening with the closure to a share of the photo's mean lid gap, so that a
    # closed eye shows no iris at all (MediaPipe reads any dark slit as an open eye).
    # The band tapers to nothing at the eye corners, so the painted lid has no box edges.
    gap = rest_opening / upper.shape[1]
    along = ((x - upper[:, :1, 0]) / (upper[:, -1:, 0] - upper[:, :1, 0]).clamp_min(1.0)).clamp(0, 1)
    taper = torch.sin(math.pi * along).clamp_min(0).sqrt() * strength[:, None]
    reach_up = 1.5 + taper * LID_REACH_UP * gap
    reach_lo = 1.5 + taper * LID_REACH_LOW * gap
    inside = ((y - y_up + reach_up) / reach_up).clamp(0, 1).sqrt() \
        * ((y_lo - y + reach_lo) / reach_lo).clamp(0, 1).sqrt() * span
    lash = torch.exp(-((y - y_lo) / 0.9) ** 2) * span
    region = frames[:, :, row0:row1, col0:col1]
    shape = (frames_n, 1, row1 - row0, col1 - col0)
    a = (inside * strength[:, None]).reshape(shape)
    painted = region + a * (skin.view(1, 3, 1, 1) - region)
    darken = 1 - (1 - LASH_DARKEN) * (lash * strength[:, None]).reshape(shape)
    frames[:, :, row0:row1, col0:col1] = painted * darken
    return frames
