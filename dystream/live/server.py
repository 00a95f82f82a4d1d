"""``dystream serve``: the live engine behind a WebSocket (protocol: docs/protocol.md), and a page.

Needs the live extra (FastAPI, uvicorn).

One engine per server process (one device); the engine's clock runs in its own thread and
every connection has a receiving loop and a sending task on the event loop. A connection's
errors are answered with ``error`` messages and end only that connection (or nothing at
all, where the session can go on); other sessions are never touched.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.websockets import WebSocketDisconnect

from dystream.errors import DystreamError, InputError
from dystream.live import protocol as P
from dystream.live.engine import Engine

STATIC = Path(__file__).with_name("static")
STATS_EVERY_S = 1.0
# A client whose outbox keeps overflowing this many frames in a row is disconnected.
SLOW_CLIENT_FRAMES = 75


class Server:
    """The app's state: the engine, the options, and a lock that serialises photo encodes."""

    def __init__(self, engine: Engine, *, token: str | None = None, idle_timeout_s: float = 60.0) -> None:
        self.engine, self.token, self.idle_timeout_s = engine, token, idle_timeout_s
        self._prepare_lock = threading.Lock()
        self.connections = 0

    def authorised(self, header: str | None, query: str | None) -> bool:
        if self.token is None:
            return True
        offered = query or (header[7:] if header and header.lower().startswith("bearer ") else None)
        return offered is not None and secrets.compare_digest(offered, self.token)

    def prepare(self, photo):
        """Encode a photo (the bundled one for None) into an avatar: one at a time (MediaPipe)."""
        from dystream.video import bundled_photo

        with self._prepare_lock:
            return self.engine.pipeline.prepare(bundled_photo() if photo is None else photo)


def create_app(engine: Engine, *, token: str | None = None, idle_timeout_s: float = 60.0):
    """The FastAPI app: ``GET /`` the page, ``GET /health``, ``WS /v1/session`` the protocol."""
    server = Server(engine, token=token, idle_timeout_s=idle_timeout_s)
    app = FastAPI(title="dystream", docs_url=None, redoc_url=None)
    app.state.server = server

    @app.get("/", response_class=HTMLResponse)
    def page():
        return (STATIC / "index.html").read_text()

    @app.get("/app.js")
    def script():
        return FileResponse(STATIC / "app.js", media_type="text/javascript")

    @app.get("/capture.js")
    def worklet():
        return FileResponse(STATIC / "capture.js", media_type="text/javascript")

    @app.get("/assets/{name}")
    def asset(name: str):
        if name not in ("demo_self.wav", "demo_other.wav", "astronaut.png"):
            return JSONResponse({"error": "no such asset"}, status_code=404)
        with resources.as_file(resources.files("dystream") / "assets" / name) as path:
            return FileResponse(path)

    @app.get("/health")
    def health():
        return {"status": "ok", "version": P.VERSION, **engine.stats(), "connections": server.connections}

    @app.websocket("/v1/session")
    async def session_socket(ws: WebSocket):
        if not server.authorised(ws.headers.get("authorization"), ws.query_params.get("token")):
            await ws.close(code=4401, reason="a bearer token is required")
            return
        await ws.accept()
        server.connections += 1
        connection = _Connection(server, ws)
        try:
            await connection.run()
        except WebSocketDisconnect:
            pass
        finally:
            server.connections -= 1
            connection.end()

    return app


class _Connection:
    """One WebSocket: an ``open`` message makes the session, then audio and controls flow in and
    frames, stats and errors flow out."""

    def __init__(self, server: Server, ws) -> None:
        self.server, self.ws = server, ws
        self.session = None
        self.loop = asyncio.get_running_loop()
        self.frames_ready = asyncio.Event()
        self.sender: asyncio.Task | None = None
        self.closing = False

    async def run(self) -> None:
        while not self.closing:
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout=self.server.idle_timeout_s)
            except asyncio.TimeoutError:
                await self.error("idle", f"no message for {self.server.idle_timeout_s:.0f} s; closing", close=True)
                return
            if message["type"] == "websocket.disconnect":
                return
            try:
                if message.get("bytes") is not None:
                    self.audio(message["bytes"])
                elif message.get("text") is not None:
                    await self.control(P.parse_text(message["text"]))
            except P.ProtocolError as exc:
                await self.error(exc.code, str(exc))
            except DystreamError as exc:
                await self.error("bad_input", str(exc))

    def audio(self, data: bytes) -> None:
        stream, payload = P.parse_audio(data)
        if self.session is None:
            raise P.ProtocolError("not_open", "send an open message before audio")
        self.session.feed(stream, payload)

    async def control(self, message: dict) -> None:
        kind = message["type"]
        if kind == "open":
            await self.open(message)
        elif kind == "ping":
            await self.ws.send_text(json.dumps({"type": "pong", "time": time.time()}))
        elif self.session is None:
            raise P.ProtocolError("not_open", f"send an open message before {kind}")
        elif kind == "clear":
            self.session.clear()
        elif kind == "stats":
            await self.send_stats()
        elif kind == "close":
            self.closing = True
            await self.ws.close(code=1000)

    async def open(self, message: dict) -> None:
        if self.session is not None:
            raise P.ProtocolError("already_open", "this connection has a session; open another connection")
        if message.get("version", P.VERSION) != P.VERSION:
            raise P.ProtocolError("version", f"protocol version {message.get('version')!r}; this server speaks "
                                             f"{P.VERSION}")
        seed = message.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise P.ProtocolError("bad_message", "seed must be an integer")
        formats = {"self": P.parse_format(message.get("self_format"), "self_format"),
                   "other": P.parse_format(message.get("other_format"), "other_format")}
        photo = P.decode_photo(message.get("photo"))
        engine = self.server.engine
        if len(engine.sessions) >= engine.capacity:
            await self.error("full", f"the server is full ({engine.capacity} sessions); try again later", close=True)
            return
        try:
            avatar = await self.loop.run_in_executor(None, self.server.prepare, photo)
        except InputError as exc:
            raise P.ProtocolError("bad_photo", str(exc)) from None
        try:
            self.session = engine.open(avatar=avatar, seed=seed, formats=formats, send_motion=bool(message.get("motion")))
        except InputError as exc:
            await self.error("full", str(exc), close=True)
            return
        self.session.on_frame = lambda _: self.loop.call_soon_threadsafe(self.frames_ready.set)
        cfg = engine.model.cfg
        await self.ws.send_text(json.dumps({
            "type": "ready", "version": P.VERSION, "session": self.session.id, "fps": cfg.frames_per_second,
            "resolution": engine.pipeline.autoencoder.resolution,
            "lookahead_ms": {"self": cfg.self_lookahead_ms, "other": cfg.other_lookahead_ms},
            "self_audio": {"encoding": "pcm16", "sample_rate": cfg.sample_rate, "channels": 1,
                           "samples_per_frame": cfg.samples_per_frame}}))
        self.sender = asyncio.create_task(self.send_frames())

    async def send_frames(self) -> None:
        """Frames to the client as the engine makes them; stats every second; a client that
        reads too slowly (its outbox keeps overflowing) is disconnected."""
        next_stats, dropped_before, overflowing = time.monotonic() + STATS_EVERY_S, 0, 0
        try:
            while not self.closing:
                try:
                    await asyncio.wait_for(self.frames_ready.wait(), timeout=STATS_EVERY_S)
                except asyncio.TimeoutError:
                    pass
                self.frames_ready.clear()
                session = self.session
                for frame in session.take():
                    header = {"type": "frame", "index": frame.index, "lookahead_ms": round(frame.lookahead_s * 1e3),
                              "compute_ms": round((frame.made_at - frame.audio_end_at) * 1e3, 2),
                              "made_at": round(frame.made_at, 6)}
                    if frame.motion is not None:
                        header["motion"] = frame.motion_dict()
                    await self.ws.send_bytes(P.frame_message(header, frame.jpeg, frame.audio))
                dropped = session.counts["dropped_frames"]
                overflowing = overflowing + (dropped - dropped_before) if dropped > dropped_before else 0
                dropped_before = dropped
                if overflowing >= SLOW_CLIENT_FRAMES:
                    await self.error("too_slow", f"this client read too slowly: {overflowing} frames were dropped "
                                                 "in a row; closing", close=True)
                    return
                if time.monotonic() >= next_stats:
                    await self.send_stats()
                    next_stats = time.monotonic() + STATS_EVERY_S
        except Exception:  # the socket went away: the receiving loop ends the connection
            self.closing = True

    async def send_stats(self) -> None:
        await self.ws.send_text(json.dumps({"type": "stats", **self.session.stats()}))

    async def error(self, code: str, message: str, close: bool = False) -> None:
        try:
            await self.ws.send_text(P.error_message(code, message))
            if close:
                self.closing = True
                await self.ws.close(code=1008 if code != "full" else 1013)
        except Exception:
            self.closing = True

    def end(self) -> None:
        """Free everything of this connection (any time: mid-stream, mid-tick)."""
        self.closing = True
        if self.sender is not None:
            self.sender.cancel()
        if self.session is not None:
            self.server.engine.close(self.session)
            self.session = None


def serve(engine: Engine, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          idle_timeout_s: float = 60.0, log_level: str = "info") -> None:
    """Run the server until interrupted (the engine's clock starts with it)."""
    import uvicorn

    import gc

    app = create_app(engine, token=token, idle_timeout_s=idle_timeout_s)
    # The model, the face engine and the web stack are loaded: keep their objects out of the
    # collector's full passes (one took 127 ms on a 2-core CPU, 14 ms with them frozen).
    gc.collect()
    gc.freeze()
    engine.start()
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, ws_max_size=P.MAX_TEXT_BYTES + 1024)
    finally:
        engine.stop()
