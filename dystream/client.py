"""A small Python client of ``dystream serve`` (protocol: docs/protocol.md).

    async with LiveClient.connect("ws://127.0.0.1:8765/v1/session", photo=open("me.jpg", "rb").read()) as client:
        await client.send_audio("self", samples)          # float32 at 16 kHz unless declared otherwise
        async for frame in client.frames():               # LiveClientFrame: index, jpeg, audio, header
            ...

Needs ``pip install dystream[live]`` (websockets).
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass

import numpy as np

from dystream.live import protocol as P


@dataclass
class LiveClientFrame:
    index: int
    jpeg: bytes
    audio: np.ndarray          # float32 [640]: the self audio this frame belongs to, 16 kHz
    header: dict
    received_at: float         # the client's loop clock


class LiveClient:
    """One session over a WebSocket. Messages other than frames (``stats``, ``error``, ``pong``)
    are kept in ``messages``; the latest stats in ``stats``."""

    def __init__(self, ws, ready: dict) -> None:
        self.ws, self.ready = ws, ready
        self.messages: list[dict] = []
        self.stats: dict | None = None
        self.formats: dict[str, P.AudioFormat] = {}

    @classmethod
    def connect(cls, url: str, *, photo: bytes | None = None, seed: int = 0, self_format: dict | None = None,
                other_format: dict | None = None, motion: bool = False, token: str | None = None,
                extra: dict | None = None) -> "_Connecting":
        """``async with LiveClient.connect(...) as client`` (or ``client = await LiveClient.connect(...)``):
        opens the WebSocket and the session. ``photo``: the bytes of an image file (None: the
        server's bundled photo); formats: {"encoding", "sample_rate", "channels"} per stream."""
        message = {"type": "open", "version": P.VERSION, "seed": seed, "motion": motion,
                   "photo": None if photo is None else base64.b64encode(photo).decode(),
                   "self_format": self_format, "other_format": other_format, **(extra or {})}
        return _Connecting(url, message, token)

    async def send_audio(self, stream: str, samples) -> None:
        """A chunk of "self" or "other" audio: a float32 array (or raw bytes in the declared format)."""
        payload = samples if isinstance(samples, (bytes, bytearray)) else np.asarray(samples, "<f4").tobytes()
        await self.ws.send(P.audio_message(stream, payload))

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps(message))

    async def clear(self) -> None:
        await self.send({"type": "clear"})

    async def receive(self, timeout: float | None = None) -> LiveClientFrame | dict:
        """The next message: a frame, or a JSON message (also kept in ``messages``)."""
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        loop_time = asyncio.get_running_loop().time()
        if isinstance(data, bytes):
            header, jpeg, audio = P.parse_frame(data)
            return LiveClientFrame(header["index"], jpeg, audio, header, loop_time)
        message = json.loads(data)
        self.messages.append(message)
        if message.get("type") == "stats":
            self.stats = message
        return message

    async def frames(self, timeout: float | None = None):
        """Frames as they come (other messages are kept in ``messages``)."""
        while True:
            item = await self.receive(timeout)
            if isinstance(item, LiveClientFrame):
                yield item

    async def close(self) -> None:
        try:
            await self.send({"type": "close"})
        except Exception:
            pass
        await self.ws.close()


class _Connecting:
    def __init__(self, url: str, message: dict, token: str | None) -> None:
        self.url, self.message, self.token = url, message, token
        self.client: LiveClient | None = None

    async def _open(self) -> LiveClient:
        import websockets

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        ws = await websockets.connect(self.url, additional_headers=headers, max_size=None)
        await ws.send(json.dumps(self.message))
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("type") == "ready":
                break
            if reply.get("type") == "error":
                await ws.close()
                raise ConnectionError(f"{reply.get('code')}: {reply.get('message')}")
        self.client = LiveClient(ws, reply)
        return self.client

    def __await__(self):
        return self._open().__await__()

    async def __aenter__(self) -> LiveClient:
        return await self._open()

    async def __aexit__(self, *exc) -> None:
        if self.client is not None:
            await self.client.close()
