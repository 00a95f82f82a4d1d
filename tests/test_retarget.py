"""Putting generated motion onto a photo whose own expression lies outside the training range."""

import numpy as np
import torch

from dystream import motion as M
from dystream.pipeline.retarget import photo_anchor, to_photo


class _Stats(torch.nn.Module):
    def __init__(self, pose_relative=False):
        super().__init__()
        self.register_buffer("motion_mean", torch.full((M.MOTION_DIM,), 0.1))
        self.register_buffer("motion_std", torch.full((M.MOTION_DIM,), 0.05))
        mask = torch.zeros(M.MOTION_DIM)
        if pose_relative:
            mask[M.POSE_SLICE] = 1.0
        self.register_buffer("relative_mask", mask)


def test_anchor_is_the_photo_motion_inside_the_range_and_clipped_outside():
    model = _Stats()
    m0 = np.full(M.MOTION_DIM, 0.12, np.float32)
    np.testing.assert_array_equal(photo_anchor(model, m0), m0)
    m0[M.idx("mouthSmileLeft")] = 0.9  # a broad smile: far above mean + 3 std = 0.25
    anchor = photo_anchor(model, m0)
    assert anchor[M.idx("mouthSmileLeft")] == np.float32(0.25)
    assert np.all(anchor[np.arange(M.MOTION_DIM) != M.idx("mouthSmileLeft")] == np.float32(0.12))


def test_a_pose_relative_model_gets_the_photo_pose_unclipped():
    m0 = np.full(M.MOTION_DIM, 0.12, np.float32)
    m0[M.idx("yaw")] = 0.35           # 20 degrees: far outside mean + 3 std
    m0[M.idx("mouthSmileLeft")] = 0.9
    anchor = photo_anchor(_Stats(pose_relative=True), m0)
    assert anchor[M.idx("yaw")] == np.float32(0.35)               # pose is measured from it, not clipped
    assert anchor[M.idx("mouthSmileLeft")] == np.float32(0.25)    # expression still clipped
    assert photo_anchor(_Stats(), m0)[M.idx("yaw")] == np.float32(0.25)


def test_rendered_motion_is_photo_plus_generated_movement():
    m0 = M.neutral_frame()
    m0[M.idx("mouthSmileLeft")] = 0.9
    anchor = m0.copy()
    anchor[M.idx("mouthSmileLeft")] = 0.25
    generated = np.tile(anchor, (3, 1))
    generated[1, M.idx("jawOpen")] += 0.3          # the mouth opens
    generated[2, M.idx("mouthSmileLeft")] += 0.2   # the smile widens past the bound
    out = to_photo(generated, anchor, m0)
    np.testing.assert_allclose(out[0], m0, atol=1e-7)                      # rest -> the photo itself
    assert out[1, M.idx("jawOpen")] == np.float32(m0[M.idx("jawOpen")] + 0.3)
    assert out[1, M.idx("mouthSmileLeft")] == np.float32(0.9)              # photo's own smile kept
    assert out[2, M.idx("mouthSmileLeft")] == np.float32(1.0)              # clamped to the bound
