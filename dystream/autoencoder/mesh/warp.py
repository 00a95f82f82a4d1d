"""Dense warp fields from sparse landmark displacements (thin-plate spline).

The spline is solved once per photo with the control points at the photo's own
landmarks plus fixed anchors on the crop border, and evaluated once on a coarse
grid, giving a matrix ``M`` [G*G, 468]: the coarse forward displacement field of a
frame is ``M @ d`` for the landmark displacements ``d`` [468, 2]. The backward map
(output pixel -> photo pixel) is found by a few fixed-point steps on the coarse
grid, then upsampled. Per frame that is one small matmul and a few grid samples.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

COARSE_GRID = 128
BORDER_ANCHORS_PER_SIDE = 12
SMOOTHING = 1e-4       # spline regularisation: keeps close control points from ringing
INVERSION_STEPS = 4
FOLD_JUMP_CELLS = 2.5    # an inverted offset this far (in coarse cells) from its neighbours' median is an outlier


def _tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """r^2 log r between every point of ``a`` [N, 2] and of ``b`` [M, 2]: [N, M].

    Squared distances as |a|^2 + |b|^2 - 2 a.b (one matmul) and the rest in place:
    no [N, M, 2] temporary (the coarse grid against ~500 points is 16k x 500, and
    fresh memory for a 130 MB temporary cost ~0.7 s on a photo's first encode)."""
    d2 = a @ b.T
    d2 *= -2.0
    d2 += (a * a).sum(1)[:, None]
    d2 += (b * b).sum(1)[None, :]
    np.maximum(d2, 0.0, out=d2)
    kernel = d2 + 1e-12
    np.log(kernel, out=kernel)
    kernel *= d2
    kernel *= 0.5
    return kernel


def border_anchors(count: int = BORDER_ANCHORS_PER_SIDE) -> np.ndarray:
    """Points along the crop border in grid_sample units ([-1, 1]); they never move."""
    t = np.linspace(-1, 1, count, endpoint=False)
    return np.concatenate([np.stack([t, -np.ones_like(t)], 1), np.stack([np.ones_like(t), t], 1),
                           np.stack([-t, np.ones_like(t)], 1), np.stack([-np.ones_like(t), -t], 1)])


def coarse_grid(size: int = COARSE_GRID) -> np.ndarray:
    """Cell centres of a size x size grid in [-1, 1], as [size*size, 2] (x, y)."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    ys, xs = np.meshgrid(c, c, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], 1)


def spline_fields(control: np.ndarray, values: np.ndarray, size: int = COARSE_GRID) -> np.ndarray:
    """Thin-plate spline through ``values`` [N, C] at the ``control`` points (grid_sample
    units) and zero at the fixed border anchors, evaluated on the coarse grid:
    [size*size, C] float32. Being linear in the values, it is computed once per photo
    for every field the decoder combines per frame."""
    anchors = border_anchors()
    points = np.concatenate([control, anchors]).astype(np.float64)
    n = len(points)
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = _tps_kernel(points, points) + SMOOTHING * np.eye(n)
    system[:n, n] = 1
    system[:n, n + 1:] = points
    system[n, :n] = 1
    system[n + 1:, :n] = points.T
    rhs = np.zeros((n + 3, values.shape[1]))
    rhs[: len(control)] = values
    coefficients = np.linalg.solve(system, rhs)
    grid = coarse_grid(size)
    evaluate = np.concatenate([_tps_kernel(grid, points), np.ones((len(grid), 1)), grid], 1)
    return (evaluate @ coefficients).astype(np.float32)


def spline_to_grid(control: np.ndarray, size: int = COARSE_GRID) -> np.ndarray:
    """[size*size, N]: the full map from control-point values to the coarse field
    (for inspection and tests; the decoder uses :func:`spline_fields`)."""
    return spline_fields(control, np.eye(len(control)), size)


def _settle_folds(offset: torch.Tensor, spacing: float) -> torch.Tensor:
    """Pixels whose inverted offset jumps away from their neighbours' take the median
    of their 5x5 neighbourhood.

    At a turned face's silhouette the forward warp folds (the cheek passes over the face
    edge), so a pixel there has two answers, face and background, and Newton lands on
    either from one pixel to the next: speckles of skin in the background. Where the
    offset differs from the neighbourhood median by more than a cell, the median (the
    branch most neighbours chose) gives one clean edge instead.
    """
    # Separable 5-tap medians (rows, then columns): close to a 5x5 median at a fifth
    # of the sorting work.
    padded = F.pad(offset, (2, 2, 2, 2), mode="replicate")
    width, height = padded.shape[3] - 4, padded.shape[2] - 4
    rows = _median_of_five([padded[..., k:k + width] for k in range(5)])               # [T, 2, G+4, G]
    median = _median_of_five([rows[..., k:k + height, :] for k in range(5)])           # [T, 2, G, G]
    jump = (offset - median).norm(dim=1, keepdim=True) > FOLD_JUMP_CELLS * spacing
    return torch.where(jump, median, offset)


def _median_of_five(v: list[torch.Tensor]) -> torch.Tensor:
    """The element-wise median of five tensors by comparisons (exactly ``median`` of them
    stacked, many times faster than sorting on a CPU). Of two sorted pairs (a <= b),
    (c <= d), the smaller of a and c is below three others and never the median of the
    five; of what is left the median is the second smallest of the two sorted pairs
    (rest, e) and (c, d): min(max(first elements), min(second elements))."""
    a, b = torch.minimum(v[0], v[1]), torch.maximum(v[0], v[1])
    c, d = torch.minimum(v[2], v[3]), torch.maximum(v[2], v[3])
    first = a <= c   # drop a (b stays) or drop c (d stays, and a, b take the place of c, d)
    rest = torch.where(first, b, d)
    c, d = torch.where(first, c, a), torch.where(first, d, b)
    x, y = torch.minimum(rest, v[4]), torch.maximum(rest, v[4])
    return torch.minimum(torch.maximum(x, c), torch.minimum(y, d))


def backward_map(forward: torch.Tensor, output_size: int, steps: int = INVERSION_STEPS) -> torch.Tensor:
    """Forward displacement field [T, 2, G, G] (grid units, at photo positions) ->
    sampling grid [T, S, S, 2] that pulls each output pixel from the photo.

    Solves s + D(s) = x by Newton steps with the field's Jacobian (finite
    differences on the coarse grid). Plain fixed-point steps fail where the field
    stretches hard (lips parting, a lid closing); Newton converges wherever the warp
    does not fold.
    """
    frames, _, size, _ = forward.shape
    dev, dt = forward.device, forward.dtype
    c = (torch.arange(size, device=dev, dtype=dt) + 0.5) / size * 2 - 1
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    target = torch.stack([xs, ys], -1)[None].expand(frames, -1, -1, -1)
    spacing = 2.0 / size
    padded = F.pad(forward, (1, 1, 1, 1), mode="replicate")
    d_dx = (padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2]) / (2 * spacing)
    d_dy = (padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1]) / (2 * spacing)
    stacked = torch.cat([forward, d_dx, d_dy], 1)          # [T, 6, G, G]
    source = target - forward.permute(0, 2, 3, 1)
    for _ in range(steps):
        at = F.grid_sample(stacked, source, mode="bilinear", padding_mode="border",
                           align_corners=False).permute(0, 2, 3, 1)
        residual = source + at[..., 0:2] - target
        a, b = 1 + at[..., 2], at[..., 4]                  # J = [[1 + dDx/dx, dDx/dy],
        cc, d = at[..., 3], 1 + at[..., 5]                 #      [dDy/dx, 1 + dDy/dy]]
        det = a * d - b * cc
        det = torch.where(det.abs() < 0.05, torch.full_like(det, 0.05) * det.sign().clamp_min(0).mul(2).sub(1), det)
        step_x = (d * residual[..., 0] - b * residual[..., 1]) / det
        step_y = (-cc * residual[..., 0] + a * residual[..., 1]) / det
        step = torch.stack([step_x, step_y], -1).clamp(-0.1, 0.1)
        source = source - step
    offset = (source - target).permute(0, 3, 1, 2)
    offset = _settle_folds(offset, spacing)
    offset = F.interpolate(offset, size=(output_size, output_size), mode="bilinear", align_corners=False)
    c = (torch.arange(output_size, device=dev, dtype=dt) + 0.5) / output_size * 2 - 1
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xs, ys], -1)[None] + offset.permute(0, 2, 3, 1)
