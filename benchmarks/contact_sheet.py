"""Contact sheet of the mesh autoencoder on the bundled photo: every expression
channel at its typical maximum, and the head at the limits of the supported range.

    python benchmarks/contact_sheet.py [-o docs/contact_sheet.png] [--resolution 256]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from dystream.autoencoder import load_autoencoder
from dystream.motion import EXPRESSION_NAMES, INDEX, POSE_LIMIT_DEGREES, TYPICAL_MAX
from dystream.video import bundled_photo


def sheet_motions(m0: np.ndarray) -> list[tuple[str, np.ndarray]]:
    rows = [("photo (m0)", m0.copy())]
    for name in EXPRESSION_NAMES:
        m = m0.copy()
        k = INDEX[name]
        # Channels the photo already shows strongly are shown going the other way.
        m[k] = 0.0 if m0[k] > 0.5 * TYPICAL_MAX[k] else TYPICAL_MAX[k]
        rows.append((f"{name} {m[k]:.2f}", m))
    for name, limit in POSE_LIMIT_DEGREES.items():
        for sign in (-1, 1):
            m = m0.copy()
            m[INDEX[name]] += sign * math.radians(limit)
            rows.append((f"{name} {sign * limit:+.0f} deg", m))
    talk = m0.copy()
    talk[[INDEX["jawOpen"], INDEX["mouthFunnel"], INDEX["eyeBlinkLeft"], INDEX["eyeBlinkRight"]]] = [0.5, 0.3, 0.8, 0.8]
    talk[INDEX["yaw"]] += math.radians(12)
    rows.append(("jaw .5 funnel .3 blink, yaw 12", talk))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="docs/contact_sheet.png")
    parser.add_argument("--resolution", type=int, default=256, choices=(256, 512))
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--tile", type=int, default=200, help="tile size in the sheet")
    args = parser.parse_args()
    ae = load_autoencoder("mesh", resolution=args.resolution)
    appearance, m0 = ae.encode(bundled_photo())
    ae.encoder.close()
    rows = sheet_motions(m0)
    frames = ae.decode(appearance, torch.from_numpy(np.stack([m for _, m in rows]))).numpy()
    tile, label_h = args.tile, 16
    cols = args.columns
    lines = math.ceil(len(rows) / cols)
    sheet = Image.new("RGB", (cols * tile, lines * (tile + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, ((label, _), frame) in enumerate(zip(rows, frames)):
        x, y = (i % cols) * tile, (i // cols) * (tile + label_h)
        sheet.paste(Image.fromarray(frame).resize((tile, tile), Image.LANCZOS), (x, y + label_h))
        draw.text((x + 3, y + 2), label, fill=(0, 0, 0))
    sheet.save(args.output)
    print(f"wrote {len(rows)} tiles to {args.output}")


if __name__ == "__main__":
    main()
