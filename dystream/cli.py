"""The ``dystream`` command line.

Every command lives next to the code it drives and exposes ``configure(parser)``,
which adds its arguments and sets ``func``; this file only routes to it, importing
nothing heavy until a command is chosen (so ``dystream --help`` is instant).
Conventions: ``-o/--output`` for what a command writes; long, self-explaining
flag names elsewhere.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dystream.errors import DystreamError

# name -> (module with configure(parser), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("dystream.commands.demo", "bundled photo + bundled two-voice conversation -> mp4 (talking and listening)"),
    "generate": ("dystream.commands.generate", "photo + self/other audio files -> mp4 and motion, offline"),
    "serve": ("dystream.commands.serve", "live: a WebSocket server and a page to talk to a photo"),
    "data": ("dystream.data.cli", "make and inspect training data: synth, inspect, from-video"),
    "encode": ("dystream.commands.encode", "read the motion of a photo or a video into a motion file"),
    "animate": ("dystream.commands.animate", "render a motion file on a photo -> mp4"),
    "train": ("dystream.training.cli", "train the generator (alone or under torchrun)"),
    "evaluate": ("dystream.evaluation.cli", "measure lip-sync, listening and drift on a test split"),
    "bench": ("dystream.commands.bench", "speed benchmark of the generator's frame step (benchmarks/ has the others)"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: dystream COMMAND [options]   (dystream COMMAND --help for each)", "",
             "Real-time dyadic talking-head generation.", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from dystream import __version__

        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"dystream: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"dystream {name}", description=help_)
    module.configure(parser)
    args = parser.parse_args(argv[1:])
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        result = func(args)
    except DystreamError as exc:
        print(f"dystream {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dystream {name}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
