"""The wire format of ``dystream serve`` (version 1; docs/protocol.md is the reference).

Client -> server: JSON text messages (``open``, ``clear``, ``stats``, ``ping``, ``close``)
and binary audio messages: one byte naming the stream (0 self, 1 other), then samples in
the format the ``open`` message declared for it.

Server -> client: JSON text messages (``ready``, ``stats``, ``error``, ``pong``) and binary
frame messages: ``b"F"``, a 4-byte big-endian header length, the header (UTF-8 JSON:
index, timestamps, byte counts, optionally the motion), the JPEG, then the frame's self
audio (PCM16 little-endian, 16 kHz, mono).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct

import numpy as np

from dystream.audio.stream import AudioFormat
from dystream.config import SAMPLE_RATE
from dystream.errors import InputError

VERSION = 1
STREAM_CODES = {0: "self", 1: "other"}
FRAME_MAGIC = b"F"
MESSAGE_TYPES = ("open", "clear", "stats", "ping", "close")
# Guard rails (the server's defaults; `dystream serve --help` names the options).
MAX_PHOTO_BYTES = 8 * 1024 * 1024
MAX_PHOTO_PIXELS = 24_000_000
MAX_TEXT_BYTES = 12 * 1024 * 1024     # an open message with a base64 photo
MAX_AUDIO_BYTES = 256 * 1024          # one binary audio message (~1.4 s of 48 kHz stereo float32)


class ProtocolError(InputError):
    """A message the protocol does not allow; ``code`` names the kind for clients."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_message(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


def parse_text(text: str) -> dict:
    """A JSON text message -> dict with a known ``type``."""
    if len(text.encode("utf-8", "ignore")) > MAX_TEXT_BYTES:
        raise ProtocolError("too_large", f"text messages are limited to {MAX_TEXT_BYTES} bytes")
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("bad_message", 'a text message must be a JSON object with a "type"')
    if message["type"] not in MESSAGE_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {message['type']!r}; "
                                            f"types are {', '.join(MESSAGE_TYPES)}")
    return message


def parse_format(value, name: str) -> AudioFormat:
    """An ``open`` message's stream format: {"encoding", "sample_rate", "channels"}."""
    if value is None:
        return AudioFormat()
    if not isinstance(value, dict) or set(value) - {"encoding", "sample_rate", "channels"}:
        raise ProtocolError("bad_format", f"{name} must be an object with encoding, sample_rate and channels")
    try:
        return AudioFormat(value.get("encoding", "float32"), value.get("sample_rate", SAMPLE_RATE), value.get("channels", 1))
    except InputError as exc:
        raise ProtocolError("bad_format", f"{name}: {exc}") from None


def decode_photo(value) -> np.ndarray | None:
    """An ``open`` message's photo: base64 of a PNG/JPEG/... file (None: the bundled photo)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError("bad_photo", "photo must be a base64 string of an image file, or null")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_photo", "photo is not valid base64") from None
    if len(data) > MAX_PHOTO_BYTES:
        raise ProtocolError("too_large", f"the photo file is {len(data)} bytes; the limit is {MAX_PHOTO_BYTES}")
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PHOTO_PIXELS:
                raise ProtocolError("too_large", f"the photo has {image.width} x {image.height} pixels; the limit "
                                                 f"is {MAX_PHOTO_PIXELS} pixels")
            return np.array(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise ProtocolError("bad_photo", "photo is not an image file PIL can read; send a PNG or JPEG") from None


def parse_audio(data: bytes) -> tuple[str, bytes]:
    """A binary audio message -> (stream name, payload)."""
    if len(data) > MAX_AUDIO_BYTES + 1:
        raise ProtocolError("too_large", f"audio messages are limited to {MAX_AUDIO_BYTES} bytes")
    if not data or data[0] not in STREAM_CODES:
        raise ProtocolError("bad_audio", "a binary message is audio: its first byte must be 0 (self) or 1 (other)")
    return STREAM_CODES[data[0]], data[1:]


def audio_message(stream: str, payload: bytes) -> bytes:
    return bytes([0 if stream == "self" else 1]) + payload


def frame_message(header: dict, jpeg: bytes, audio: np.ndarray) -> bytes:
    """A binary frame message: magic, header length, header JSON, JPEG, PCM16 self audio."""
    pcm = np.clip(np.round(np.asarray(audio, np.float32) * 32767), -32768, 32767).astype("<i2").tobytes()
    header = dict(header, jpeg_bytes=len(jpeg), audio_bytes=len(pcm))
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return FRAME_MAGIC + struct.pack(">I", len(encoded)) + encoded + jpeg + pcm


def parse_frame(data: bytes) -> tuple[dict, bytes, np.ndarray]:
    """A binary frame message -> (header, JPEG bytes, self audio float32 [samples])."""
    if not data.startswith(FRAME_MAGIC) or len(data) < 5:
        raise ProtocolError("bad_frame", "not a frame message")
    (length,) = struct.unpack(">I", data[1:5])
    header = json.loads(data[5:5 + length])
    start = 5 + length
    jpeg = data[start:start + header["jpeg_bytes"]]
    pcm = np.frombuffer(data[start + header["jpeg_bytes"]:start + header["jpeg_bytes"] + header["audio_bytes"]],
                        dtype="<i2")
    return header, jpeg, pcm.astype(np.float32) / 32768.0
