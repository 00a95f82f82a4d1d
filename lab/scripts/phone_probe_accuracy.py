"""How well the generator's self audio encoder hears phones, per voice: the training-only
phone probe (GeneratorConfig.phone_weight) read out on whole conversation tracks.

For weights trained with the probe, this measures what the encoder carries about what
is said, voice by voice, against the data engine's phone labels: frame accuracy over
speech frames, and recall / precision of the bilabials (p, b, m: the frames where the
lips must close). A voice whose bilabials the probe misses is a voice the encoder does
not understand, whatever the flow head makes of it.

    python benchmarks/phone_probe_accuracy.py --data /tmp/valdata --splits val test \
        --json out.json [WEIGHTS]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
import torch

from dystream.config import SAMPLES_PER_FRAME
from dystream.generator.weights import load_generator
from dystream.training.dataset import PHONE_CLASSES, frame_phone_classes, load_conversations

BILABIAL_CLASSES = [PHONE_CLASSES.index(p) for p in ("p", "b", "m")]
PAU = PHONE_CLASSES.index("pau")


@torch.no_grad()
def track_predictions(model, audio: np.ndarray, frames: int) -> np.ndarray:
    """Predicted phone class per frame [frames] of one party's track (16 kHz float)."""
    left, right = model.audio_context()
    ctx = model.cfg.encoder_context_frames
    padded = np.zeros(left + frames * SAMPLES_PER_FRAME + right, np.float32)
    clip = audio[:frames * SAMPLES_PER_FRAME]
    padded[left:left + clip.size] = clip
    features = model.self_encoder(torch.from_numpy(padded)[None], ctx + frames)[:, ctx:]
    return model.phone_probe(features)[0].argmax(-1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="?", default=None, help="generator weights (default: the bundled ones)")
    parser.add_argument("--data", required=True, help="dataset directory (dystream data synth)")
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--json", default=None, help="write the scores here")
    args = parser.parse_args()

    model = load_generator(args.weights)
    if not model.wants_phones:
        parser.error("these weights have no phone probe (trained with phone_weight = 0)")
    results = {}
    for split in args.splits:
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for conv in load_conversations(args.data, split):
            for party in range(2):
                labels = frame_phone_classes(conv.labels[party].phones, conv.num_frames).astype(np.int64)
                if (labels < 0).all():
                    continue
                guess = track_predictions(model, conv.audio[party], conv.num_frames)
                speech = (labels >= 0) & (labels != PAU)
                bilabial = np.isin(labels, BILABIAL_CLASSES)
                said_bilabial = np.isin(guess, BILABIAL_CLASSES)
                c = counts[conv.voices[party]]
                c["speech_frames"] += int(speech.sum())
                c["speech_correct"] += int((speech & (guess == labels)).sum())
                c["bilabial_frames"] += int(bilabial.sum())
                c["bilabial_heard"] += int((bilabial & said_bilabial).sum())
                c["said_bilabial"] += int((said_bilabial & (labels >= 0)).sum())
                c["said_bilabial_right"] += int((said_bilabial & bilabial).sum())
        scores = {}
        for voice, c in sorted(counts.items()):
            scores[voice] = {
                "speech_frames": c["speech_frames"],
                "phone_accuracy": c["speech_correct"] / max(c["speech_frames"], 1),
                "bilabial_frames": c["bilabial_frames"],
                "bilabial_recall": c["bilabial_heard"] / max(c["bilabial_frames"], 1),
                "bilabial_precision": c["said_bilabial_right"] / max(c["said_bilabial"], 1),
            }
            s = scores[voice]
            print(f"{split:5s} {voice:28s} speech frames {s['speech_frames']:6d}  phone acc {s['phone_accuracy']:.3f}  "
                  f"bilabial recall {s['bilabial_recall']:.3f} precision {s['bilabial_precision']:.3f}")
        results[split] = scores
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"weights": args.weights or "bundled", "data": args.data, "per_voice": results}, f, indent=1)


if __name__ == "__main__":
    main()
