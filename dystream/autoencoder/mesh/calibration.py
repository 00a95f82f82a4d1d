"""Cycle consistency of the mesh autoencoder, and calibration of its gains against it.

Cycle: decode motion on a photo, run the encoder (MediaPipe) on the rendered pixels,
compare what it reads with what was asked. MediaPipe's blendshape scores have their
own scale, so each channel's gain (geometry per unit of coefficient) is fitted to
make the read-back match: a few damped multiplicative updates from one-channel
sweeps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from dystream.autoencoder.mesh.decoder import default_gains
from dystream.motion import (EXPRESSION_NAMES, INDEX, MOTION_DIM, NAMES, NUM_EXPRESSION,
                             POSE_LIMIT_DEGREES, TYPICAL_MAX, clamp)

# The channels the done-when targets list: mouth and eyes (MAE <= 0.15) and head angles (<= 3 deg).
MOUTH_EYE_CHANNELS = tuple(n for n in EXPRESSION_NAMES if n.startswith(("jaw", "mouth", "eye")))
ANGLE_CHANNELS = ("pitch", "yaw", "roll")
CALIBRATED_CHANNELS = EXPRESSION_NAMES + ANGLE_CHANNELS

# Largest basis amplitude a channel may reach at its typical maximum. Beyond these the
# mesh folds (lids or lips pass through each other) or the jaw leaves the face: the
# read-back may still rise a little, but the picture breaks. 1 = the basis as designed.
MAX_AMPLITUDE = {
    # Lids meet at 1 and the decoder stops the amplitude there, so the gain may close the
    # eye well before the coefficient's maximum: MediaPipe reads a warped closed eye at
    # only ~0.35 (one eye) to ~0.5 (both), so closing early is what brings the sweep closer.
    "eyeBlinkLeft": 2.2, "eyeBlinkRight": 2.2,
    "mouthClose": 1.0, "mouthFunnel": 1.0, "mouthPucker": 1.5,
    "mouthRollLower": 1.0, "mouthRollUpper": 1.0, "mouthPressLeft": 1.0, "mouthPressRight": 1.0,
    "jawOpen": 1.4, "browDownLeft": 2.0, "browDownRight": 2.0,
    "browOuterUpLeft": 2.0, "browOuterUpRight": 2.0,
    # Pose: a 2D warp of a 3D turn reads back smaller than rendered. Turning further
    # stretches the silhouette (the warp cannot show the hidden side of the head); with
    # the fold outliers settled (warp._settle_folds) yaw 1.3 shows a clean edge at 20 deg.
    "yaw": 1.3, "pitch": 1.05, "roll": 1.0,
}


def gain_limits(name: str) -> tuple[float, float]:
    """(lowest, highest) gain the fit may choose for a channel."""
    k = INDEX[name]
    default = float(default_gains()[k])
    high = default * 4
    if name in ANGLE_CHANNELS:
        high = MAX_AMPLITUDE[name]
    elif name in MAX_AMPLITUDE:
        high = min(high, MAX_AMPLITUDE[name] / float(TYPICAL_MAX[k]))
    return default / 4, high


def channel_range(name: str) -> tuple[float, float]:
    """Range a sweep or a random motion covers for a channel (the supported range)."""
    if name in POSE_LIMIT_DEGREES:
        limit = math.radians(POSE_LIMIT_DEGREES[name])
        return -limit, limit
    k = INDEX[name]
    if name in ("tx", "ty"):
        return -0.05, 0.05
    if name == "log_scale":
        return -0.08, 0.08
    return 0.0, float(TYPICAL_MAX[k])


def sweep_motions(m0: np.ndarray, name: str, steps: int = 5) -> np.ndarray:
    """[steps, D]: m0 with one channel moved across its range (pose: m0 + offsets)."""
    low, high = channel_range(name)
    values = np.linspace(low, high, steps, dtype=np.float32)
    out = np.repeat(m0[None].astype(np.float32), steps, axis=0)
    k = INDEX[name]
    out[:, k] = values if name in EXPRESSION_NAMES else m0[k] + values
    return clamp(out)


def random_motions(m0: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """[count, D] motions within the supported range: each expression channel active
    with probability 0.3 (else at the photo's value), every pose channel drawn."""
    out = np.repeat(m0[None].astype(np.float32), count, axis=0)
    for name in EXPRESSION_NAMES:
        k = INDEX[name]
        active = rng.random(count) < 0.3
        out[active, k] = rng.uniform(0, TYPICAL_MAX[k], active.sum())
    for name in ("pitch", "yaw", "roll", "tx", "ty", "log_scale"):
        low, high = channel_range(name)
        out[:, INDEX[name]] = m0[INDEX[name]] + rng.uniform(low, high, count)
    return clamp(out).astype(np.float32)


def read_back(autoencoder, appearance, motion: np.ndarray, batch: int = 16) -> np.ndarray:
    """What the encoder reads off the decoded frames of ``motion`` [T, D] (NaN rows: no face)."""
    rows = []
    for start in range(0, len(motion), batch):
        frames = autoencoder.decode(appearance, torch.from_numpy(motion[start:start + batch]), paste_back=False)
        rows.append(autoencoder.encoder.read_rendered(frames.cpu().numpy()))
    return np.concatenate(rows)


def errors(asked: np.ndarray, read: np.ndarray) -> dict[str, float]:
    """Mean absolute error per channel (angles in degrees), over rows where a face was read."""
    ok = ~np.isnan(read).any(axis=1)
    out = {"faces_read": float(ok.mean())}
    for k, name in enumerate(NAMES):
        err = np.abs(asked[ok, k] - read[ok, k])
        out[name] = float(np.degrees(err.mean()) if name in ANGLE_CHANNELS else err.mean()) if ok.any() else math.nan
    return out


def evaluate(autoencoder, appearance, m0: np.ndarray, *, random_count: int = 100, sweep_steps: int = 5,
             seed: int = 0, motions: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Cycle-consistency report: per channel MAE over its own sweep, and over random
    motions (or the given ``motions``, e.g. from a dataset)."""
    report: dict[str, dict[str, float]] = {"sweep": {}}
    for name in CALIBRATED_CHANNELS:
        asked = sweep_motions(m0, name, sweep_steps)
        report["sweep"][name] = errors(asked, read_back(autoencoder, appearance, asked))[name]
    if motions is None:
        motions = random_motions(m0, random_count, np.random.default_rng(seed))
    report["random"] = errors(motions, read_back(autoencoder, appearance, motions))
    return report


def passes(report: dict[str, dict[str, float]], mouth_eye_mae: float = 0.15, angle_deg: float = 3.0) -> dict[str, bool]:
    """Which done-when targets a report meets, per part."""
    out = {}
    for part, values in report.items():
        ok = all(values.get(n, math.inf) <= mouth_eye_mae for n in MOUTH_EYE_CHANNELS)
        ok &= all(values.get(n, math.inf) <= angle_deg for n in ANGLE_CHANNELS)
        out[part] = ok
    return out


def fit_gains(autoencoder, appearance, m0: np.ndarray, rounds: int = 3, steps: int = 5,
              log=print) -> dict[str, float]:
    """Fit each calibrated channel's gain so that read-back follows what was asked.

    Each round, per channel: sweep it alone, regress read-back change on asked change
    (through the origin, at m0), propose gain * asked/read, and keep the proposal
    (or half of it, in log space) only if the sweep's MAE drops — MediaPipe's scores
    saturate and even fall when a face is pushed too far, so bigger is not always better.
    """
    gains = autoencoder.decoder.gains
    for name in CALIBRATED_CHANNELS:
        gains[INDEX[name]] = float(np.clip(float(gains[INDEX[name]]), *gain_limits(name)))

    def sweep_error(k: int, name: str) -> tuple[float, float]:
        asked = sweep_motions(m0, name, steps)
        read = read_back(autoencoder, appearance, asked)
        ok = ~np.isnan(read[:, k])
        want, got = asked[ok, k] - m0[k], read[ok, k] - m0[k]
        slope = float((want * got).sum() / max((want * want).sum(), 1e-9))
        return float(np.abs(want - got).mean()) if ok.any() else math.inf, slope

    for round_ in range(rounds):
        for name in CALIBRATED_CHANNELS:
            k = INDEX[name]
            current = float(gains[k])
            error, slope = sweep_error(k, name)
            ratio = float(np.clip(1.0 / max(slope, 0.05), 0.33, 3.0))
            for power in (1.0, 0.5):
                gains[k] = float(np.clip(current * ratio**power, *gain_limits(name)))
                trial, _ = sweep_error(k, name)
                if trial < error:
                    break
                gains[k] = current
            log(f"round {round_} {name:<20} slope {slope:6.3f} mae {error:.3f} -> gain {float(gains[k]):.3f}")
    return {name: float(gains[INDEX[name]]) for name in CALIBRATED_CHANNELS}


def mouth_eye_error(asked: np.ndarray, read: np.ndarray) -> float:
    """Mean over the mouth and eye channels of their MAE (rows where a face was read)."""
    values = errors(asked, read)
    return float(np.mean([values[n] for n in MOUTH_EYE_CHANNELS]))


def _sweep_errors(m0: np.ndarray, read: np.ndarray, steps: int) -> dict[str, float]:
    """Each mouth and eye channel's own-sweep MAE; ``read`` holds the read-back of the
    sweeps of CALIBRATED_CHANNELS, ``steps`` rows each, in that order."""
    out = {}
    for c, name in enumerate(CALIBRATED_CHANNELS):
        if name in MOUTH_EYE_CHANNELS:
            rows = slice(c * steps, (c + 1) * steps)
            out[name] = errors(sweep_motions(m0, name, steps), read[rows])[name]
    return out


def fit_coupling(autoencoder, appearance, m0: np.ndarray, motions: np.ndarray, rounds: int = 3,
                 ridge: float = 1e-2, limit: float = 1.5, sweep_steps: int = 5, log=print) -> np.ndarray:
    """Fit the decoder's cross-talk compensation on mixed motions [N, D] (e.g. a
    validation split moved onto the photo), so read-back follows what was asked.

    Each round: decode, read back, regress each channel's error (read - asked) on the
    other channels' asked change from m0 (ridge least squares through the origin: m0
    itself reads back as m0, so the error of a motion comes from its change), and subtract the fitted slopes from the coupling, so a
    channel is rendered a little more where its neighbours would eat into its reading.
    The one-channel sweeps from m0 join the regression, and a step is kept only if
    the mouth-and-eye error (on the motions plus on the sweeps) drops; otherwise it
    is halved — so mixed motion is not bought with cross-talk in the sweeps.
    Returns the coupling (also left on ``autoencoder.decoder``).
    """
    decoder = autoencoder.decoder
    n = NUM_EXPRESSION
    count = len(motions)
    sweeps = np.concatenate([sweep_motions(m0, name, sweep_steps) for name in CALIBRATED_CHANNELS])
    motions = np.concatenate([motions, sweeps])

    def score(read: np.ndarray) -> float:
        # Mixed-motion error plus sweep error (a per-channel max of the two was tried:
        # it let more of both miss the target on the astronaut).
        swept = _sweep_errors(m0, read[count:], sweep_steps)
        return mouth_eye_error(motions[:count], read[:count]) + float(np.mean(list(swept.values())))

    delta = (motions[:, :n] - m0[:n]).astype(np.float64)
    # Only the jaw and lips are coupled: that is where MediaPipe reads shapes together.
    # Eyes and brows stay independent (data blinks both eyes at once, so a fit would
    # make a wink close the other eye too).
    coupled = np.array([name.startswith(("jaw", "mouth")) for name in EXPRESSION_NAMES])
    active = (delta.std(axis=0) > 1e-3) & coupled
    # The jaw is no source: compensating its cross-talk (holding the lower lip back as
    # the chin drops) made MediaPipe read the test split better but turned an open
    # mouth into a long chin over a small mouth, and cut the jaw's own read-back.
    sources_ok = active & (np.arange(n) != INDEX["jawOpen"])
    read = read_back(autoencoder, appearance, motions)
    best = score(read)
    log(f"coupling round 0: mouth/eye MAE, motions + sweeps {best:.4f}")
    for round_ in range(1, rounds + 1):
        ok = ~np.isnan(read).any(axis=1)
        x, err = delta[ok], (read[ok, :n] - motions[ok, :n]).astype(np.float64)
        update = np.zeros((n, n))
        for i in range(n):
            sources = np.flatnonzero(sources_ok & (np.arange(n) != i))
            if not active[i] or len(sources) == 0:
                continue
            design = x[:, sources]
            gram = design.T @ design + ridge * len(x) * np.eye(len(sources))
            update[i, sources] = np.linalg.solve(gram, design.T @ err[:, i])
        current = decoder.coupling.clone()
        for step in (1.0, 0.5, 0.25):
            trial = np.clip(current.numpy() - step * update, -limit, limit)
            decoder.coupling = torch.as_tensor(trial, dtype=torch.float32)
            trial_read = read_back(autoencoder, appearance, motions)
            error = score(trial_read)
            log(f"coupling round {round_} step {step}: mouth/eye MAE, motions + sweeps {error:.4f}")
            if error < best:
                best, read = error, trial_read
                break
            decoder.coupling = current
        else:
            break
    return decoder.coupling.numpy()


def coupling_table(coupling: np.ndarray, threshold: float = 1e-3) -> dict[str, dict[str, float]]:
    """Non-zero coupling entries by name, as calibration.json stores them."""
    return {EXPRESSION_NAMES[i]: {EXPRESSION_NAMES[j]: round(float(coupling[i, j]), 4)
                                  for j in range(len(EXPRESSION_NAMES)) if abs(coupling[i, j]) > threshold}
            for i in range(len(EXPRESSION_NAMES)) if np.abs(coupling[i]).max() > threshold}


def save_gains(gains: dict[str, float], path: Path, note: str,
               coupling: dict[str, dict[str, float]] | None = None) -> Path:
    table = {"note": note, "gains": gains}
    if coupling:
        table["coupling"] = coupling
    path.write_text(json.dumps(table, indent=1) + "\n")
    return path


__all__ = ["evaluate", "fit_gains", "fit_coupling", "coupling_table", "random_motions", "sweep_motions", "read_back", "passes", "MOTION_DIM"]
