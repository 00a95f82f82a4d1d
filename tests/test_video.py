"""Video and image IO: mp4 round trip with audio in sync, resampling, image modes, bad files."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from dystream.errors import InputError
from dystream.video import bundled_photo, read_audio_track, read_image, read_video, write_mp4


def _frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    # Smooth colour gradients: what a codec with 4:2:0 chroma keeps well.
    base = np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) * 127 // (width + height)], -1)
    base = base.astype(np.uint8)
    # A bright bar that moves one pixel per frame, so frames differ in a way a codec keeps.
    out = np.repeat(base[None], count, axis=0)
    for t in range(count):
        out[t, :, t % width] = 255
    return out


def test_mp4_has_h264_aac_25fps_and_audio_of_the_video_length(tmp_path):
    frames = _frames(40)
    audio = 0.3 * np.sin(np.arange(40 * 640) * 2 * np.pi * 440 / 16000).astype(np.float32)
    path = write_mp4(tmp_path / "a.mp4", frames, audio)
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        sound = container.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert sound.codec_context.name == "aac"
        assert float(video.average_rate) == 25.0
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video)]
    assert len(decoded) == 40
    assert decoded[0].shape == (48, 64, 3)
    # H.264 at crf 20 stays close to the input.
    assert np.abs(decoded[10].astype(int) - frames[10]).mean() < 12
    track = read_audio_track(path)
    assert abs(len(track) / 16000 - 40 / 25) < 0.1
    # The tone survives: its energy sits where it was put.
    spectrum = np.abs(np.fft.rfft(track[2000:10000]))
    assert abs(np.argmax(spectrum) * 16000 / 8000 - 440) < 10


def test_odd_sizes_are_padded_and_torch_frames_accepted(tmp_path):
    torch = pytest.importorskip("torch")
    frames = torch.from_numpy(_frames(5, 33, 47))
    path = write_mp4(tmp_path / "odd.mp4", frames)
    got = list(read_video(path))
    assert len(got) == 5 and got[0].shape == (34, 48, 3)


def test_read_video_resamples_to_25_fps(tmp_path):
    path = write_mp4(tmp_path / "fast.mp4", _frames(50), fps=50)
    assert len(list(read_video(path))) == 25
    path = write_mp4(tmp_path / "slow.mp4", _frames(10), fps=10)
    assert len(list(read_video(path))) == 25


def test_write_rejects_bad_frames(tmp_path):
    with pytest.raises(InputError):
        write_mp4(tmp_path / "x.mp4", np.zeros((3, 8, 8), np.float32))
    with pytest.raises(InputError):
        write_mp4(tmp_path / "y.mp4", [])


def test_read_image_modes_and_errors(tmp_path):
    gray = np.tile(np.arange(32, dtype=np.uint8)[None], (20, 1))
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    with pytest.warns(UserWarning, match="grayscale"):
        rgb = read_image(tmp_path / "g.png")
    assert rgb.shape == (20, 32, 3) and (rgb[..., 0] == gray).all()
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255          # top opaque red, bottom transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    with pytest.warns(UserWarning, match="transparency"):
        out = read_image(tmp_path / "t.png")
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[9, 9]) == (255, 255, 255)
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="cannot read"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError):
        list(read_video(tmp_path / "bad.png"))


def test_bundled_photo_is_the_astronaut():
    photo = bundled_photo()
    assert photo.shape == (512, 512, 3) and photo.dtype == np.uint8
