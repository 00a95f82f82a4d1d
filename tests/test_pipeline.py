"""The pipeline: photo -> avatar -> motion on the photo -> frames, offline and streaming alike."""

import numpy as np
import pytest
import torch

from dystream.config import SAMPLES_PER_FRAME
from dystream.errors import InputError
from dystream.generator.offline import generate_motion
from dystream.motion import MOTION_DIM, idx
from dystream.pipeline import Pipeline
from dystream.pipeline.pipeline import _checked_device
from dystream.pipeline.retarget import photo_anchor

from generator_helpers import single_thread  # noqa: F401  (autouse fixture)
from generator_helpers import anchor_frame, feed_interleaved, speech_like, tiny_generator


class _PaintingAutoencoder:
    """Stands in for the mesh autoencoder: the photo's motion is fixed, a frame is painted with
    its jawOpen value."""

    resolution = 4

    def __init__(self, photo_motion):
        self.photo_motion = photo_motion

    def encode(self, image):
        return image.mean(), self.photo_motion.copy()

    def decode(self, appearance, motion, paste_back=False):
        value = (motion[..., idx("jawOpen")].clamp(0, 1) * 255).to(torch.uint8)
        return value[..., None, None, None].expand(*value.shape, 4, 4, 3).clone()


def _pipeline(photo_motion):
    return Pipeline(tiny_generator(seed=2, pose_relative=True), _PaintingAutoencoder(photo_motion))


def test_offline_generation_is_the_generator_on_the_photo():
    m0 = anchor_frame(1)
    m0[idx("mouthSmileLeft")] = 0.95  # far outside the training range: the anchor is clipped
    pipeline = _pipeline(m0)
    avatar = pipeline.prepare(np.zeros((8, 8, 3), np.uint8))
    assert np.array_equal(avatar.photo_motion, m0)
    assert np.array_equal(avatar.anchor, photo_anchor(pipeline.model, m0))
    assert avatar.anchor[idx("mouthSmileLeft")] < 0.95
    a, b = speech_like(30 * SAMPLES_PER_FRAME, 1), speech_like(30 * SAMPLES_PER_FRAME, 2)
    motion = pipeline.generate(avatar, a, b, seed=4)
    generated = generate_motion(pipeline.model, a, b, avatar.anchor, seed=4)
    np.testing.assert_array_equal(motion, avatar.on_photo(generated))
    assert motion.shape == (30, MOTION_DIM)
    frames = list(pipeline.render(avatar, motion, chunk=7))
    assert len(frames) == 30 and frames[0].shape == (4, 4, 3)
    assert [f[0, 0, 0] for f in frames] == [int(np.clip(m, 0, 1) * 255) for m in motion[:, idx("jawOpen")]]


def test_a_session_of_the_pipeline_streams_the_offline_frames():
    pipeline = _pipeline(anchor_frame(3))
    avatar = pipeline.prepare(np.zeros((8, 8, 3), np.uint8))
    a, b = speech_like(20 * SAMPLES_PER_FRAME, 3), speech_like(20 * SAMPLES_PER_FRAME, 4)
    offline = pipeline.generate(avatar, a, b, seed=1)
    session = pipeline.session(avatar, seed=1)
    sizes = [333] * (len(a) // 333) + [len(a) % 333]
    frames = feed_interleaved(session, a, b, sizes, sizes[::-1], np.random.default_rng(0))
    assert np.abs(np.stack([f.motion for f in frames]) - offline).max() <= 1e-5
    assert all(f.image.shape == (4, 4, 3) for f in frames)
    quiet = pipeline.session(avatar, seed=1, render=False)
    assert all(f.image is None for f in quiet.feed("self", a) + quiet.feed("other", b))


def test_bad_devices_and_a_pipeline_without_autoencoder_are_clear_errors():
    with pytest.raises(InputError, match="unknown device"):
        _checked_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            _checked_device("cuda")
    motion_only = Pipeline(tiny_generator())
    with pytest.raises(InputError, match="no autoencoder"):
        motion_only.prepare(np.zeros((8, 8, 3), np.uint8))
    avatar = motion_only.avatar(anchor_frame())
    assert motion_only.generate(avatar, speech_like(SAMPLES_PER_FRAME * 3, 5)).shape == (3, MOTION_DIM)
    with pytest.raises(InputError, match="rendering needs"):
        list(motion_only.render(avatar, np.zeros((2, MOTION_DIM), np.float32)))
