"""``dystream serve``: the live engine behind a WebSocket, with a page to talk to it.

Open http://127.0.0.1:8765/ in a browser (Chromium): pick a photo and a voice, and talk;
your microphone is the partner. Protocol for other clients: docs/protocol.md; a Python
client: dystream.client. One server drives one device; for several GPUs run one server per
device (``--device cuda:N --port P``) behind a load balancer (docs/live.md).
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
                                                            "machine only; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    parser.add_argument("--device", default="cpu", help="torch device of the engine: cpu, cuda, cuda:N")
    parser.add_argument("--weights", help="generator weights (.safetensors); default: the bundled small model")
    parser.add_argument("--resolution", type=int, default=256, choices=[256, 512], help="frame size")
    parser.add_argument("--max-sessions", type=int, default=None,
                        help="sessions at once; the next is refused with a message (default 2 on a CPU, 64 on a GPU)")
    parser.add_argument("--jpeg-quality", type=int, default=85, help="JPEG quality of the frames (default 85)")
    parser.add_argument("--token", help="require this bearer token (Authorization header, or ?token= for browsers)")
    parser.add_argument("--idle-timeout", type=float, default=60.0,
                        help="close a connection silent for this many seconds (default 60)")
    parser.add_argument("--no-graphs", action="store_true", help="run the GPU step eagerly (no CUDA graphs)")
    from dystream.cli_options import add_sampling_options

    add_sampling_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from dystream.cli_options import sampling_from
    from dystream.errors import InputError, MissingDependencyError

    sampling = sampling_from(args)
    if not 1 <= args.jpeg_quality <= 100:
        raise InputError("--jpeg-quality must be 1-100")
    try:
        import fastapi  # noqa: F401
        import simplejpeg  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"dystream serve needs the live extra ({exc.name} is missing): "
                                     "pip install 'dystream[live]'") from None
    from dystream.live.engine import Engine
    from dystream.live.server import serve
    from dystream.pipeline import Pipeline

    pipeline = Pipeline.load(args.weights, device=args.device, resolution=args.resolution, sampling=sampling)
    capacity = args.max_sessions or (64 if pipeline.model.device.type == "cuda" else 2)
    if capacity < 1:
        raise InputError("--max-sessions must be at least 1")
    engine = Engine(pipeline, capacity=capacity, graphs=False if args.no_graphs else None,
                    jpeg_quality=args.jpeg_quality)
    print(f"dystream serve: http://{args.host}:{args.port}/ ({engine.stats()['device']}, up to {capacity} "
          f"sessions, {args.resolution} px)")
    serve(engine, host=args.host, port=args.port, token=args.token, idle_timeout_s=args.idle_timeout)
    return 0
