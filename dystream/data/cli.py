"""``dystream data``: synth | inspect | from-video."""

from __future__ import annotations

import argparse

from dystream.errors import InputError


def _split_hours(text: str) -> dict[str, float]:
    """``train=10,val=0.5,test=1`` -> shares of each split (any positive numbers)."""
    out: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected split=hours pairs like train=10,val=0.5,test=1, got {text!r}") from None
        if not sep:
            raise argparse.ArgumentTypeError(f"expected split=hours pairs like train=10,val=0.5,test=1, got {text!r}")
    return out


def _timbre_range(text: str) -> tuple[float, float]:
    """``0.88,1.25`` -> (0.88, 1.25); one number means a fixed factor."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH like 0.88,1.25 (or 1,1 for off), got {text!r}")
    return values[0], values[1]


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="{synth,inspect,from-video}")

    synth = sub.add_parser("synth", help="generate synthetic two-party conversations (audio, motion, labels)",
                           description="Generate synthetic two-party conversations into shards.")
    synth.add_argument("--hours", type=float, required=True,
                       help="conversation time to generate over all splits (the long test conversations come on top "
                            "when they exceed the test share)")
    synth.add_argument("-o", "--output", required=True, help="dataset folder (created; an existing one is resumed)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=1, help="parallel processes (output does not depend on it)")
    synth.add_argument("--split-hours", type=_split_hours, default=None,
                       help="shares of the splits, e.g. train=17,val=1,test=2 (scaled to --hours; "
                            "default train=0.85,val=0.05,test=0.10)")
    synth.add_argument("--engines", default="flite,espeak,festival",
                       help="speech engines: flite (4 voices; 3 train, 1 test), espeak (37 voices; GPL), "
                            "festival (ked, the validation split's recorded voice). Without festival, "
                            "give val no hours or keep espeak (then val has one espeak-ng voice)")
    synth.add_argument("--exclude-voices", default="", metavar="VOICE,...",
                       help="leave these voices (engine:name, e.g. flite:kal16) out of every split")
    synth.add_argument("--add-train-voices", default="", metavar="VOICE,...",
                       help="train on these voices too: Festival's voices of other languages reading English "
                            "(festival:lp Italian, festival:upc_ca_ona Catalan, festival:suo_fi_lj Finnish; "
                            "all female); in no split by default")
    synth.add_argument("--long-test-conversations", type=int, default=10,
                       help="5-minute conversations at the start of the test split, for drift measurements")
    synth.add_argument("--conversations-per-shard", type=int, default=8)
    synth.add_argument("--min-seconds", type=float, default=20.0, help="shortest conversation")
    synth.add_argument("--max-seconds", type=float, default=240.0, help="longest conversation (except long test ones)")
    synth.add_argument("--train-timbre", type=_timbre_range, default=(0.88, 1.25), metavar="LOW,HIGH",
                       help="training speakers only: scale each party's pitch and formants by a factor drawn "
                            "log-uniformly in [LOW, HIGH] (more speakers from each voice; 1,1 = off). "
                            "Val and test voices are never changed")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_synth)

    inspect = sub.add_parser("inspect", help="statistics of a dataset and a picture of one conversation")
    inspect.add_argument("dataset", help="dataset folder")
    inspect.add_argument("-o", "--output", default=None, help="PNG of one example conversation")
    inspect.add_argument("--conversation", default=None, help="id of the conversation to draw (default: first of val)")
    inspect.add_argument("--seconds", type=float, default=12.0, help="length of the drawn excerpt")
    inspect.set_defaults(func=_inspect)

    # its options and code belong to dystream.data.from_video (light to import; the face
    # models load only when it runs)
    from_video = sub.add_parser("from-video", help="make shards from real talking videos (motion read by the encoder)")
    try:
        from dystream.data.from_video import configure_from_video
    except ImportError as exc:
        from_video.set_defaults(func=_unavailable(f"`dystream data from-video` is not available in this build ({exc})"))
    else:
        configure_from_video(from_video)
    parser.set_defaults(func=None)


def _synth(args: argparse.Namespace) -> int:
    from dystream.data.synth import SynthSettings, synthesize_dataset

    settings = SynthSettings(
        seed=args.seed, hours=args.hours,
        engines=[e.strip() for e in args.engines.split(",") if e.strip()],
        exclude_voices=[v.strip() for v in args.exclude_voices.split(",") if v.strip()],
        add_train_voices=[v.strip() for v in args.add_train_voices.split(",") if v.strip()],
        long_test_conversations=args.long_test_conversations,
        conversations_per_shard=args.conversations_per_shard,
        min_seconds=args.min_seconds, max_seconds=args.max_seconds, train_timbre=args.train_timbre)
    if args.split_hours is not None:
        shares = {"train": 0.0, "val": 0.0, "test": 0.0}
        unknown = set(args.split_hours) - set(shares)
        if unknown:
            raise InputError(f"--split-hours: unknown split(s) {', '.join(sorted(unknown))}; use train, val, test")
        shares.update(args.split_hours)
        settings.split_fractions = shares
    manifest = synthesize_dataset(args.output, settings, workers=args.workers, progress=not args.quiet)
    run = manifest["last_run"]
    hours = manifest["hours"]
    print(f"{args.output}: " + ", ".join(f"{s} {h:.3f} h" for s, h in hours.items())
          + f"; this run wrote {run['shards_written']} shards ({run['hours_written']:.3f} h) "
            f"in {run['wall_seconds']:.1f} s with {run['workers']} workers")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from dystream.data.inspect import dataset_statistics, format_statistics, plot_example

    stats = dataset_statistics(args.dataset)
    print(format_statistics(stats))
    if args.output:
        path = plot_example(args.dataset, args.output, conversation_id=args.conversation, seconds=args.seconds)
        print(f"wrote {path}")
    return 0


def _unavailable(message: str):
    def fail(args: argparse.Namespace) -> int:
        raise InputError(message)

    return fail
