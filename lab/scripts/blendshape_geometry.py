"""Where a sweep's score is lost: in the warp's geometry or in MediaPipe's reading of the pixels?

MediaPipe's face landmarker reads a frame in two stages: a landmark network turns
pixels into 478 points, and a small blendshape network turns 146 of those points
(x, y in pixels) into the 52 scores. This tool separates the stages on the
cycle-consistency sweeps (docs/autoencoder.md):

    # 1. here (needs the face engine): render each sweep, keep what the landmarker reads
    #    (points and scores) and the points the warp meant to put there
    python benchmarks/blendshape_geometry.py dump -o sweeps.npz [--photo PHOTO]
    # 2. in a separate environment with LiteRT (its protobuf is newer than mediapipe's):
    #    python -m venv /tmp/litert && /tmp/litert/bin/pip install ai-edge-litert numpy
    /tmp/litert/bin/python benchmarks/blendshape_geometry.py score sweeps.npz [--json out.json]

``score`` runs the blendshape network alone (it ships in the same ``.task`` file;
the path is stored by ``dump``) on (a) the points the landmarker read - which must
reproduce MediaPipe's own scores, checked - and (b) the intended points: the warp's
468 mesh points, with the read iris points. It also reports how far the read points
followed the intended move (least-squares ratio over the points the warp moves by
more than 0.3 px) and what is left over.

``score`` imports only numpy and LiteRT, so the second environment needs nothing else.
"""

from __future__ import annotations

import argparse
import json
import zipfile

import numpy as np

CHANNELS = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthRollLower", "mouthRollUpper",
            "mouthPressLeft", "mouthSmileLeft", "eyeBlinkLeft")

# The blendshape network's input: these 146 of the 478 landmarks, in this order (the
# landmark subset of MediaPipe's face blendshapes graph, Apache-2.0).
BLENDSHAPE_INPUT_POINTS = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70,
    78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149,
    150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195,
    197, 234, 246, 249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300,
    308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375,
    377, 378, 379, 380, 381, 382, 384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454,
    466, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
)
MESH_POINTS = 468


def dump(args: argparse.Namespace) -> None:
    import torch

    from dystream.autoencoder import load_autoencoder
    from dystream.autoencoder.mesh.calibration import sweep_motions
    from dystream.autoencoder.mesh.decoder import warped_landmarks
    from dystream.autoencoder.mesh.landmarker import find_model
    from dystream.motion import INDEX
    from dystream.video import bundled_photo, read_image

    ae = load_autoencoder("mesh", resolution=args.resolution)
    appearance, m0 = ae.encode(read_image(args.photo) if args.photo else bundled_photo())
    size = args.resolution
    out: dict[str, np.ndarray] = {"model": np.array(str(find_model())), "channels": np.array(CHANNELS)}
    for name in CHANNELS:
        asked = sweep_motions(m0, name, args.steps)
        frames = ae.decode(appearance, torch.from_numpy(asked), paste_back=False).numpy()
        points, scores = [], []
        for frame in frames:
            face = ae.encoder.read_crop(np.ascontiguousarray(frame))
            if face is None:
                raise SystemExit(f"{name}: no face read on a sweep frame")
            points.append(face.landmarks[:, :2])
            scores.append([face.blendshapes[k] for k in sorted(face.blendshapes)])
        intended = warped_landmarks(appearance, torch.from_numpy(asked), ae.decoder.gains,
                                    coupling=ae.decoder.coupling).numpy() * size
        out[f"{name}/asked"] = asked[:, INDEX[name]]
        out[f"{name}/read_points"] = np.array(points, np.float32)
        out[f"{name}/read_scores"] = np.array(scores, np.float32)
        out[f"{name}/intended_points"] = intended.astype(np.float32)
    out["score_names"] = np.array(sorted(face.blendshapes))
    ae.encoder.close()
    np.savez(args.output, **out)
    print(f"wrote {len(CHANNELS)} sweeps of {args.steps} frames to {args.output}")


def follow(read: np.ndarray, intended: np.ndarray, min_px: float = 0.3) -> tuple[float, float]:
    """How far read points [N, 2] moved along the intended move [N, 2] (both relative
    to the sweep's first frame): least-squares ratio over the points meant to move by
    more than ``min_px``, and the mean distance left over (px)."""
    moved = np.linalg.norm(intended, axis=1) > min_px
    if not moved.any():
        return float("nan"), float("nan")
    r, i = read[moved], intended[moved]
    ratio = float((r * i).sum() / (i * i).sum())
    return ratio, float(np.linalg.norm(r - ratio * i, axis=1).mean())


def score(args: argparse.Namespace) -> None:
    from ai_edge_litert.interpreter import Interpreter

    data = np.load(args.sweeps)
    with zipfile.ZipFile(str(data["model"])) as task:
        network = task.read("face_blendshapes.tflite")
    interpreter = Interpreter(model_content=network)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]

    def scores(points: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(source, points[list(BLENDSHAPE_INPUT_POINTS)][None].astype(np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(target).copy()

    names = [str(n) for n in data["score_names"]]
    report = {}
    print(f"{'channel':<16} {'asked':<26} {'MediaPipe on pixels':<26} {'network on intended points':<28} "
          f"{'follow':>6} {'left px':>7}")
    for name in [str(c) for c in data["channels"]]:
        k = names.index(name)
        read, intended = data[f"{name}/read_points"], data[f"{name}/intended_points"]
        replica = np.array([scores(p) for p in read])
        mismatch = float(np.abs(replica - data[f"{name}/read_scores"]).max())
        if mismatch > 1e-3:
            raise SystemExit(f"the blendshape network alone does not reproduce MediaPipe ({mismatch:.4f}): "
                             "wrong model file or input points")
        geometry = []
        for points, mesh in zip(read, intended):
            meant = points.copy()
            meant[:MESH_POINTS] = mesh
            geometry.append(scores(meant)[k])
        ratio, left = follow(read[-1, :MESH_POINTS] - read[0, :MESH_POINTS], intended[-1] - intended[0])
        row = {"asked": data[f"{name}/asked"].round(3).tolist(), "pixels": replica[:, k].round(3).tolist(),
               "intended": np.round(geometry, 3).tolist(), "follow_ratio": round(ratio, 3), "left_px": round(left, 2),
               "replica_max_diff": mismatch}
        report[name] = row
        fmt = lambda v: " ".join(f"{x:.2f}" for x in v)  # noqa: E731
        print(f"{name:<16} {fmt(row['asked']):<26} {fmt(row['pixels']):<26} {fmt(row['intended']):<28} "
              f"{ratio:>6.2f} {left:>7.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="render the sweeps and keep what the landmarker reads (face engine)")
    d.add_argument("-o", "--output", required=True, help="npz file to write")
    d.add_argument("--photo", help="photo to animate (default: the bundled astronaut)")
    d.add_argument("--resolution", type=int, default=256, choices=(256, 512))
    d.add_argument("--steps", type=int, default=5, help="sweep steps per channel")
    s = sub.add_parser("score", help="run the blendshape network on read and intended points (ai-edge-litert)")
    s.add_argument("sweeps", help="npz written by dump")
    s.add_argument("--json", help="also write the table here")
    args = parser.parse_args()
    (dump if args.command == "dump" else score)(args)


if __name__ == "__main__":
    main()
