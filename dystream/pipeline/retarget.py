"""Fitting a photo's own motion to the generator's range, and back.

The generator learned from people whose resting faces lie inside the training
distribution; a photo can sit far outside it (a broad smile reads mouthSmile
~0.9, where the training data's mean is under 0.1). Starting the model from
such an anchor is out of distribution, and rendering its output as-is would
take the photo's own smile away. So:

* the anchor the model gets is the photo's m0 clipped into the training range
  (per channel, mean +/- ``spread`` standard deviations of the training motion,
  which the weights carry) — except the channels a ``pose_relative`` model takes
  relative to the anchor, which never reach it as absolute values;
* the rendered motion is the photo's m0 plus the model's motion relative to
  that anchor, clamped to the motion space's bounds.

Where m0 lies inside the range both steps are the identity, so nothing changes
for an ordinary neutral photo.
"""

from __future__ import annotations

import numpy as np

from dystream.motion import clamp


def photo_anchor(model, photo_motion, spread: float = 3.0) -> np.ndarray:
    """The anchor for a photo: its motion m0 clipped into the model's training range."""
    mean = model.motion_mean.detach().float().cpu().numpy()
    std = model.motion_std.detach().float().cpu().numpy()
    relative = model.relative_mask.detach().float().cpu().numpy() > 0
    m0 = np.asarray(photo_motion, dtype=np.float32)
    clipped = np.clip(m0, mean - spread * std, mean + spread * std)
    return np.where(relative, m0, clipped).astype(np.float32)


def to_photo(motion, anchor, photo_motion) -> np.ndarray:
    """Generated motion [..., D] moved onto the photo: m0 + (motion - anchor), clamped."""
    motion = np.asarray(motion, dtype=np.float32)
    offset = np.asarray(photo_motion, np.float32) - np.asarray(anchor, np.float32)
    return clamp(motion + offset).astype(np.float32)
