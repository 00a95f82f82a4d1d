"""``dystream data from-video VIDEO [--self-audio A] [--other-audio B] -o DIR``.

Turns a real talking video into training data in the shard schema of
:mod:`dystream.data.schema`: party A is the person in the video (motion read by the
mesh encoder at 25 fps), their audio is ``--self-audio`` or the video's own sound;
party B is the conversation partner, with ``--other-audio`` (silence if not given)
and no motion of their own (rest frames; ``extra["parties_with_motion"] == [0]``).
No phone labels: real video has none.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dystream.config import FRAMES_PER_SECOND, SAMPLES_PER_FRAME
from dystream.errors import InputError


def configure_from_video(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="talking video of one person (mp4, mov, ...)")
    parser.add_argument("--self-audio", help="the person's own audio (default: the video's sound track)")
    parser.add_argument("--other-audio", help="the partner's audio, if the video is one side of a conversation")
    parser.add_argument("-o", "--output", required=True, help="dataset directory to add a shard to")
    parser.add_argument("--split", default="train", choices=("train", "val", "test"))
    parser.add_argument("--id", help="conversation id (default: the video's file name)")
    parser.add_argument("--max-frames", type=int, help="read at most this many frames")
    parser.set_defaults(func=main)


def _fit(audio: np.ndarray | None, samples: int) -> np.ndarray:
    if audio is None:
        return np.zeros(samples, np.float32)
    return np.pad(audio[:samples], (0, max(samples - len(audio), 0))).astype(np.float32)


def _next_shard(split_dir: Path) -> Path:
    taken = sorted(split_dir.glob("shard-*.npz"))
    index = int(taken[-1].stem.split("-")[1]) + 1 if taken else 0
    return split_dir / f"shard-{index:05d}.npz"


def main(args: argparse.Namespace) -> int:
    from dystream.audio.io import load_audio
    from dystream.pipeline.capture import video_motion
    from dystream.data.schema import Conversation, PartyLabels, write_shard
    from dystream.motion import REST
    from dystream.video import read_audio_track

    video = Path(args.video)
    if not video.is_file():
        raise InputError(f"video not found: {video}")
    motion = video_motion(video, max_frames=args.max_frames)
    frames = len(motion)
    samples = frames * SAMPLES_PER_FRAME
    own = load_audio(args.self_audio) if args.self_audio else read_audio_track(video)
    if own is None:
        raise InputError(f"{video} has no sound track; give the person's audio with --self-audio")
    other = load_audio(args.other_audio) if args.other_audio else None
    audio = np.stack([_fit(own, samples), _fit(other, samples)])
    both = np.stack([motion, np.tile(REST, (frames, 1))]).astype(np.float32)
    conversation = Conversation(
        id=args.id or video.stem, split=args.split, audio=audio, motion=both,
        voices=[f"video:{video.name}", "video:other" if other is not None else "none"],
        labels=[PartyLabels(), PartyLabels()],
        style=[{"neutral": np.median(motion, axis=0).tolist()}, {"neutral": REST.tolist()}],
        extra={"source": "from-video", "video": video.name, "parties_with_motion": [0]},
    )
    root = Path(args.output)
    shard = write_shard(_next_shard(root / args.split), [conversation])
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else \
        {"source": "from-video", "status": "complete", "shards": []}
    manifest.setdefault("shards", []).append(str(shard.relative_to(root)))
    manifest_path.write_text(json.dumps(manifest, indent=1))
    print(f"wrote {frames} frames ({frames / FRAMES_PER_SECOND:.1f} s) of {video.name} to {shard}")
    return 0
