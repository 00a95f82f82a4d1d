"""The one definition of every event and score dystream measures.

Tests, evaluation (``dystream evaluate``) and the data engine's report all call
these functions; docs/metrics.md gives each formula. Inputs are plain arrays:
motion [T, MOTION_DIM] at 25 fps in the layout of :mod:`dystream.motion`, audio
16 kHz mono, label times in seconds. Frame t covers [t, t+1) / fps.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy.signal import butter, sosfiltfilt

from dystream.config import FRAMES_PER_SECOND, SAMPLES_PER_FRAME
from dystream.errors import InputError
from dystream.motion import MOTION_DIM, REST, idx

FPS = FRAMES_PER_SECOND

BILABIALS = frozenset({"p", "b", "m"})

# Lips count as closed below this aperture. At rest the aperture reads 0.01;
# the least open vowel (iy, jawOpen 0.13) reads about 0.2.
CLOSED_APERTURE = 0.06
# Lips close ahead of the acoustic bilabial (anticipation, up to 150 ms), so a
# bilabial occurrence is searched from this long before its start to its end.
BILABIAL_LOOKBACK_S = 0.15
# Nods: pitch band-passed to the band of nodding (0.5-4 Hz); a nod is a chin-down
# stroke faster than this followed by a chin-up stroke faster than it.
NOD_BAND_HZ = (0.5, 4.0)
NOD_VELOCITY_THRESHOLD = 0.12  # rad/s
NOD_MAX_STROKE_GAP_S = 0.6
# A nod answers a partner phrase end if it comes within this window after it.
NOD_RESPONSE_WINDOW_S = (0.0, 1.2)
DRIFT_WINDOW_S = 60.0

_JAW = idx("jawOpen")
_CLOSE = idx("mouthClose")
_LOWER = [idx("mouthLowerDownLeft"), idx("mouthLowerDownRight")]
_UPPER = [idx("mouthUpperUpLeft"), idx("mouthUpperUpRight")]
_PRESS = [idx("mouthPressLeft"), idx("mouthPressRight")]
_ROLL_LOWER = idx("mouthRollLower")
_ROLL_UPPER = idx("mouthRollUpper")
_PITCH = idx("pitch")
_ROTATION = slice(idx("pitch"), idx("roll") + 1)


def _motion(motion: np.ndarray, name: str = "motion") -> np.ndarray:
    motion = np.asarray(motion, dtype=np.float64)
    if motion.ndim != 2 or motion.shape[1] != MOTION_DIM:
        raise InputError(f"{name} must be [frames, {MOTION_DIM}], got shape {motion.shape}")
    return motion


# ---------------------------------------------------------------------------
# Lips
# ---------------------------------------------------------------------------

def lip_aperture(motion: np.ndarray) -> np.ndarray:
    """Vertical lip opening per frame, in jawOpen units [T].

    aperture = jawOpen + 0.5 (lowerDown + upperUp) - mouthClose
               - 0.5 press - 0.5 (rollLower + rollUpper)

    (left/right channels averaged). The jaw opens the mouth, lowering the lower
    lip / raising the upper lip adds to the gap, and closing, pressing or rolling
    the lips in takes it away. Reads 0.01 on a face at rest, below 0 with pressed
    lips, about 0.6 on an open vowel.
    """
    m = _motion(motion)
    return (m[:, _JAW] + 0.5 * (m[:, _LOWER].mean(1) + m[:, _UPPER].mean(1))
            - m[:, _CLOSE] - 0.5 * m[:, _PRESS].mean(1)
            - 0.5 * (m[:, _ROLL_LOWER] + m[:, _ROLL_UPPER]))


def frame_rms(audio: np.ndarray, num_frames: int | None = None) -> np.ndarray:
    """RMS of the audio samples of every frame [T] (640 samples per frame, zero-padded)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if num_frames is None:
        num_frames = audio.size // SAMPLES_PER_FRAME
    need = num_frames * SAMPLES_PER_FRAME
    if audio.size < need:
        audio = np.pad(audio, (0, need - audio.size))
    frames = audio[:need].reshape(num_frames, SAMPLES_PER_FRAME)
    # Sum of squares in float32, no float64 copy of an hour-long track.
    return np.sqrt(np.einsum("ij,ij->i", frames, frames) / SAMPLES_PER_FRAME).astype(np.float64)


def bilabial_closure_counts(motion: np.ndarray, phones: Sequence[Sequence[Any]],
                            threshold: float = CLOSED_APERTURE,
                            lookback_s: float = BILABIAL_LOOKBACK_S) -> tuple[int, int]:
    """(closed, total) over the bilabial phones (p, b, m) of a party.

    A bilabial occurrence [start, end] counts as closed when the lip aperture
    falls below ``threshold`` on at least one frame in
    [start - lookback_s, end] (frames whose span overlaps that interval).
    """
    return phone_closure_counts(motion, phones, BILABIALS, threshold, lookback_s)


def phone_closure_counts(motion: np.ndarray, phones: Sequence[Sequence[Any]], which: frozenset[str],
                         threshold: float = CLOSED_APERTURE, lookback_s: float = 0.0) -> tuple[int, int]:
    """(closed, total) over the phones of a party named in ``which`` (lower case, no
    stress digit), each counted closed as in :func:`bilabial_closure_counts`."""
    aperture = lip_aperture(motion)
    total = closed = 0
    for phone, start, end in phones:
        if str(phone).lower().rstrip("012") not in which:
            continue
        a = max(int(math.floor((float(start) - lookback_s) * FPS)), 0)
        b = min(int(math.ceil(float(end) * FPS)), aperture.size)
        if b <= a:
            continue
        total += 1
        closed += bool(aperture[a:b].min() < threshold)
    return closed, total


def bilabial_closure_rate(motion: np.ndarray, phones: Sequence[Sequence[Any]],
                          threshold: float = CLOSED_APERTURE,
                          lookback_s: float = BILABIAL_LOOKBACK_S) -> float:
    """Fraction of bilabial phones with closed lips (NaN when there are none)."""
    closed, total = bilabial_closure_counts(motion, phones, threshold, lookback_s)
    return closed / total if total else float("nan")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant or empty."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size:
        raise InputError(f"correlation needs equal lengths, got {x.size} and {y.size}")
    if x.size < 2:
        return float("nan")
    x = x - x.mean()
    y = y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y / denom) if denom > 0 else float("nan")


def jaw_open_correlation(predicted: np.ndarray, reference: np.ndarray,
                         self_speaking: np.ndarray) -> float:
    """Pearson correlation of jawOpen between prediction and reference over the
    frames where self speaks."""
    p, r = _motion(predicted, "predicted"), _motion(reference, "reference")
    n = min(len(p), len(r), len(self_speaking))
    mask = np.asarray(self_speaking[:n], dtype=bool)
    return pearson(p[:n, _JAW][mask], r[:n, _JAW][mask])


def envelope_mouth_xcorr(audio: np.ndarray, motion: np.ndarray,
                         max_lag: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Normalised cross-correlation between the audio RMS envelope and lip aperture.

    c(L) = mean_t[ z(aperture)[t] * z(envelope)[t + L] ] for L in [-max_lag, max_lag],
    z = zero mean, unit variance over the sequence. Positive L: the mouth's
    movement comes L frames before the sound it matches (mouth leads).
    Returns (lags, c). Sum curves of several sequences before taking the argmax.
    """
    aperture = lip_aperture(motion)
    envelope = frame_rms(audio, len(aperture))
    return _xcorr(aperture, envelope, max_lag)


def _xcorr(leading: np.ndarray, following: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    def z(v: np.ndarray) -> np.ndarray:
        v = v - v.mean()
        sd = v.std()
        return v / sd if sd > 0 else v

    a, e = z(np.asarray(leading, np.float64)), z(np.asarray(following, np.float64))
    n = a.size
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.zeros(lags.size)
    for i, lag in enumerate(lags):
        if lag >= 0:
            corr[i] = float(a[: n - lag] @ e[lag:]) / n if n > lag else 0.0
        else:
            corr[i] = float(a[-lag:] @ e[: n + lag]) / n if n > -lag else 0.0
    return lags, corr


def envelope_mouth_offset(audio: np.ndarray, motion: np.ndarray, max_lag: int = 10) -> int:
    """Lag in frames maximising :func:`envelope_mouth_xcorr` (positive = mouth leads)."""
    lags, corr = envelope_mouth_xcorr(audio, motion, max_lag)
    return int(lags[int(np.argmax(corr))])


# ---------------------------------------------------------------------------
# Nods
# ---------------------------------------------------------------------------

def band_passed_pitch(motion_or_pitch: np.ndarray) -> np.ndarray:
    """Head pitch band-passed to 0.5-4 Hz (zero-phase 2nd-order Butterworth)."""
    x = np.asarray(motion_or_pitch, dtype=np.float64)
    pitch = x[:, _PITCH] if x.ndim == 2 else x
    if pitch.size < 16:
        return pitch - pitch.mean() if pitch.size else pitch
    sos = butter(2, NOD_BAND_HZ, btype="bandpass", fs=FPS, output="sos")
    return sosfiltfilt(sos, pitch - pitch.mean())


def detect_nods(motion_or_pitch: np.ndarray,
                velocity_threshold: float = NOD_VELOCITY_THRESHOLD,
                max_stroke_gap_s: float = NOD_MAX_STROKE_GAP_S) -> np.ndarray:
    """Nods from head pitch: [N, 2] of (time_s, amplitude_rad).

    v = d/dt of the band-passed pitch (rad/s). A nod is a local maximum of v above
    ``velocity_threshold`` (chin going down) followed within ``max_stroke_gap_s``
    by a local minimum below -threshold (chin coming back up). Its time is the
    lowest point of the chin between the two strokes (maximum of the band-passed
    pitch there, parabolic sub-frame refinement); its amplitude is that maximum
    minus the lower of the band-passed pitch at the two strokes (band-passing
    shrinks it: a 3 degree raised-cosine nod reads about 1.7 degrees).
    """
    bp = band_passed_pitch(motion_or_pitch)
    if bp.size < 3:
        return np.zeros((0, 2))
    v = np.gradient(bp) * FPS
    interior = np.arange(1, v.size - 1)
    down = interior[(v[1:-1] > velocity_threshold) & (v[1:-1] >= v[:-2]) & (v[1:-1] > v[2:])]
    up = interior[(v[1:-1] < -velocity_threshold) & (v[1:-1] <= v[:-2]) & (v[1:-1] < v[2:])]
    nods = []
    max_gap = int(round(max_stroke_gap_s * FPS))
    j = 0
    last_up = -1
    for d in down:
        if d <= last_up:
            continue
        while j < up.size and up[j] <= d:
            j += 1
        if j >= up.size:
            break
        u = up[j]
        if u - d > max_gap:
            continue
        k = d + int(np.argmax(bp[d:u + 1]))
        offset = 0.0
        if 0 < k < bp.size - 1:
            denom = bp[k - 1] - 2 * bp[k] + bp[k + 1]
            if denom < 0:
                offset = 0.5 * (bp[k - 1] - bp[k + 1]) / denom
        amplitude = bp[k] - min(bp[d], bp[u])
        nods.append(((k + 0.5 + offset) / FPS, amplitude))
        last_up = u
    return np.array(nods, dtype=np.float64).reshape(-1, 2)


def nod_timing(nod_times: np.ndarray, partner_phrase_ends: Sequence[float],
               listening: np.ndarray,
               window_s: tuple[float, float] = NOD_RESPONSE_WINDOW_S) -> dict[str, Any]:
    """Listening nods against the partner's phrase ends.

    Only nods that fall on listening frames (``listening`` per-frame bool: self
    silent) count. Returns ``listening_minutes``, ``nods`` (count),
    ``rate_per_minute`` = nods / listening minutes, ``phrase_ends`` (partner
    phrase ends on listening frames), ``delays_s`` (for each such phrase end
    answered by a nod in (end + window[0], end + window[1]], the delay to the
    first one) and ``response_rate`` = answered / phrase ends.
    """
    listening = np.asarray(listening, dtype=bool)
    n = listening.size
    times = np.asarray(nod_times, dtype=np.float64).reshape(-1)
    frames = np.floor(times * FPS).astype(int)
    on_listening = (frames >= 0) & (frames < n)
    on_listening[on_listening] &= listening[frames[on_listening]]
    listening_times = np.sort(times[on_listening])
    minutes = listening.sum() / FPS / 60.0
    delays = []
    counted_ends = 0
    for end in partner_phrase_ends:
        f = int(math.floor(float(end) * FPS))
        if not (0 <= f < n and listening[f]):
            continue
        counted_ends += 1
        after = listening_times[(listening_times > end + window_s[0]) &
                                (listening_times <= end + window_s[1])]
        if after.size:
            delays.append(float(after[0] - end))
    return {
        "listening_minutes": float(minutes),
        "nods": int(listening_times.size),
        "rate_per_minute": float(listening_times.size / minutes) if minutes > 0 else float("nan"),
        "phrase_ends": counted_ends,
        "delays_s": delays,
        "response_rate": len(delays) / counted_ends if counted_ends else float("nan"),
    }


# ---------------------------------------------------------------------------
# Pose drift and the baseline
# ---------------------------------------------------------------------------

def pose_drift_degrees(motion: np.ndarray, neutral: np.ndarray,
                       window_s: float = DRIFT_WINDOW_S) -> float:
    """Largest per-angle distance (degrees) between the mean head rotation
    (pitch, yaw, roll) over the last ``window_s`` and the neutral pose:
    max_a |mean_t(pose_a[t]) - neutral_a|."""
    m = _motion(motion)
    neutral = np.asarray(neutral, dtype=np.float64).reshape(-1)
    if neutral.size != MOTION_DIM:
        raise InputError(f"neutral must hold {MOTION_DIM} floats, got {neutral.size}")
    if len(m) == 0:
        return float("nan")
    last = m[-int(round(window_s * FPS)):, _ROTATION].mean(axis=0)
    return float(np.degrees(np.abs(last - neutral[_ROTATION]).max()))


# RMS baseline: jawOpen = rest + gain * min(rms / reference, 1.5), where reference
# is the 90th percentile of the clip's non-silent frame RMS, and gain makes a
# reference-loud frame read 0.4 (a mid-open vowel).
BASELINE_GAIN = 0.4
BASELINE_SILENCE_RMS = 1e-3


def rms_baseline_motion(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """The trivial baseline: audio RMS -> jawOpen, every other channel at rest."""
    rms = frame_rms(audio, num_frames)
    voiced = rms[rms > BASELINE_SILENCE_RMS]
    reference = float(np.percentile(voiced, 90)) if voiced.size else 1.0
    motion = np.tile(REST.astype(np.float64), (num_frames, 1))
    motion[:, _JAW] = REST[_JAW] + BASELINE_GAIN * np.minimum(rms / reference, 1.5)
    return motion.astype(np.float32)
