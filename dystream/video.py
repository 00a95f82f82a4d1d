"""Video and image files at the edges of the system (PyAV, Pillow).

``write_mp4`` writes H.264 + AAC at 25 fps with the audio starting at frame 0, so
picture and sound stay in sync; ``read_video`` returns frames resampled to 25 fps;
``read_image`` turns any picture file into HxWx3 uint8 RGB or says clearly why not.
"""

from __future__ import annotations

import warnings
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from dystream.config import FRAMES_PER_SECOND, SAMPLE_RATE
from dystream.errors import InputError

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".gif"}
AUDIO_BITRATE = 96_000


def bundled_photo() -> np.ndarray:
    """The demo identity: scikit-image's astronaut (public domain), 512x512 RGB."""
    from PIL import Image

    with resources.as_file(resources.files("dystream") / "assets" / "astronaut.png") as path:
        return np.array(Image.open(path).convert("RGB"))


def read_image(path: str | Path) -> np.ndarray:
    """HxWx3 uint8 RGB from an image file; grayscale and RGBA are converted with a note."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
                warnings.warn(f"{path}: transparency composited on white", stacklevel=2)
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            elif mode in ("L", "I", "I;16", "F", "1"):
                warnings.warn(f"{path}: grayscale image used as RGB", stacklevel=2)
            return np.array(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} as an image ({exc}); use a PNG or JPEG photo") from None


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _as_uint8_frames(frames) -> Iterator[np.ndarray]:
    for frame in frames:
        if hasattr(frame, "detach"):
            frame = frame.detach().cpu().numpy()
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"video frames must be HxWx3 uint8, got {frame.shape} {frame.dtype}")
        yield frame


def write_mp4(path: str | Path, frames: Iterable, audio: np.ndarray | None = None, *,
              fps: int = FRAMES_PER_SECOND, crf: int = 20) -> Path:
    """Write frames (HxWx3 uint8, numpy or torch; an array [T, H, W, 3] or any iterable)
    as H.264 (yuv420p) at ``fps``, with 16 kHz mono ``audio`` as AAC starting at frame 0.
    Odd frame sizes are padded by one pixel (H.264 needs even sizes)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), mode="w")
    video = None
    audio_stream = None
    count = 0
    try:
        if audio is not None:
            audio = np.asarray(audio, np.float32).reshape(-1)
            audio_stream = container.add_stream("aac", rate=SAMPLE_RATE)
            audio_stream.layout = "mono"
            audio_stream.bit_rate = AUDIO_BITRATE
        for frame in _as_uint8_frames(frames):
            if video is None:
                height, width = frame.shape[:2]
                video = container.add_stream("libx264", rate=fps)
                video.width, video.height = width + width % 2, height + height % 2
                video.pix_fmt = "yuv420p"
                video.options = {"crf": str(crf), "preset": "veryfast"}
                video.codec_context.time_base = Fraction(1, fps)
            if frame.shape[0] % 2 or frame.shape[1] % 2:
                frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            picture.pts = count
            picture.time_base = Fraction(1, fps)
            for packet in video.encode(picture):
                container.mux(packet)
            count += 1
        if video is None:
            raise InputError("no frames to write")
        for packet in video.encode():
            container.mux(packet)
        if audio_stream is not None and audio.size:
            chunk = 1024
            for start in range(0, audio.size, chunk):
                piece = audio[start:start + chunk]
                sound = av.AudioFrame.from_ndarray(np.clip(piece, -1, 1)[None], format="flt", layout="mono")
                sound.sample_rate = SAMPLE_RATE
                sound.pts = start
                sound.time_base = Fraction(1, SAMPLE_RATE)
                for packet in audio_stream.encode(sound):
                    container.mux(packet)
            for packet in audio_stream.encode():
                container.mux(packet)
    finally:
        container.close()
    return path


def video_fps(path: str | Path) -> float:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float(stream.average_rate or stream.guessed_rate or FRAMES_PER_SECOND)


def read_video(path: str | Path, fps: int = FRAMES_PER_SECOND) -> Iterator[np.ndarray]:
    """Frames (HxWx3 uint8 RGB) of a video resampled to ``fps``: each output time shows the source frame on screen then."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV's message says what the demuxer could not read
        raise InputError(f"cannot read {path} as a video ({exc})") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{path} has no video stream")
        try:
            yield from _resampled(container, fps)
        except av.error.FFmpegError as exc:
            raise InputError(f"cannot decode {path} as a video ({exc})") from None


def _resampled(container, fps: int) -> Iterator[np.ndarray]:
    stream = container.streams.video[0]
    rate = float(stream.average_rate or stream.guessed_rate or fps)
    next_index = 0
    for frame in container.decode(stream):
        if frame.time is None:
            continue
        # Emit every output frame whose time falls within this source frame's display interval.
        while next_index / fps < frame.time + 1.0 / rate - 1e-6:
            yield frame.to_ndarray(format="rgb24")
            next_index += 1


def read_audio_track(path: str | Path) -> np.ndarray | None:
    """The first audio stream of a media file as 16 kHz mono float32, or None if it has none."""
    import av

    from dystream.audio.io import to_mono_16k

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        chunks = []
        rate = stream.rate
        for frame in container.decode(stream):
            data = frame.to_ndarray()
            if frame.format.is_planar:
                data = data.T
            else:
                data = data.reshape(-1, frame.layout.nb_channels if hasattr(frame.layout, "nb_channels")
                                    else len(frame.layout.channels))
            chunks.append(data.astype(np.float32))
            rate = frame.sample_rate
        if not chunks:
            return np.zeros(0, np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return to_mono_16k(np.concatenate(chunks), rate, source=str(path))
