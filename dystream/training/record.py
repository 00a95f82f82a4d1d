"""What a run's record says about it: the command that reproduces it, with portable paths."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path


def portable(text: str) -> str:
    """A path as a record may name it: relative to the working directory when inside it, else its
    name alone (a record carries no machine's absolute paths)."""
    if not os.path.isabs(text):
        return text
    try:
        return os.path.relpath(text) if Path(text).resolve().is_relative_to(Path.cwd().resolve()) else Path(text).name
    except ValueError:
        return Path(text).name


def command_line(args: argparse.Namespace, world_size: int) -> str:
    """The command that reproduces this run: every option that differs from its default."""
    words = ["dystream", "train", "generator"]
    parser: argparse.ArgumentParser = args.command_parser
    for action in parser._actions:
        # --resume is left out: the command retrains the run from scratch.
        if not action.option_strings or action.dest in ("help", "resume", "command_parser"):
            continue
        value = getattr(args, action.dest, None)
        if value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            words.append(flag)
        elif isinstance(value, list):
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, portable(str(value))]
    if world_size > 1:
        words = ["torchrun", f"--nproc_per_node={world_size}", "-m", *words]
    return shlex.join(words)
