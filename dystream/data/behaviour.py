"""Motion rules of the synthetic conversation engine: labels + audio -> motion.

Given what one party says (phones, words, phrases, backchannels with times) and
what the partner says, :func:`animate_party` writes that party's motion at 25 fps
in the layout of :mod:`dystream.motion`, on MediaPipe's scale, and records the
events it placed (nods, blinks, smiles) in the party's labels, so every metric
has exact ground truth.

The rules, in the order they are applied:

* Articulation (while speaking): each phone has a target mouth shape (a viseme)
  and a dominance function in time; the mouth at time t is the
  dominance-weighted mean of the targets (coarticulation in the style of
  Cohen & Massaro). Dominance reaches further before a phone than after it
  (anticipatory coarticulation), and the first phone after a silence reaches
  back by the person's ``anticipation_lead_s`` (50-150 ms), so lips leave rest
  before the sound starts. Bilabials and labiodentals dominate strongly, so
  lips close on p/b/m whatever the neighbours; lingual consonants barely
  constrain the lips, so rounding spreads through them.
* Head (always): a smooth mean-reverting process around the neutral pose
  (livelier while speaking, calmer while listening), breathing sway, small nods
  on stressed syllables (long vowels of content words at loud frames) with
  brow raises; hard limits from :data:`dystream.motion.POSE_LIMIT_DEGREES`.
* Listening (own speech off): slight smile baseline, occasional smiles, nods a
  reaction delay (200-500 ms) after the partner's phrase ends.
* Blinks: Poisson, denser at one's own phrase boundaries.

Everything is vectorised with numpy: about 5 ms per minute of one party's motion
(measured on the 2-core development CPU while it was shared; the engine's
budget is 20 ms).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.signal import lfilter

from dystream.config import FRAMES_PER_SECOND, SAMPLES_PER_FRAME
from dystream.data.schema import PartyLabels
from dystream.errors import InputError
from dystream.motion import MOTION_DIM, POSE_LIMIT_DEGREES, REST, idx

__all__ = ["sample_style", "animate_party", "PHONES", "VOWELS", "BILABIALS",
           "LABIODENTALS", "ROUNDED", "normalise_phone", "speaking_mask"]

FPS = FRAMES_PER_SECOND

# ---------------------------------------------------------------------------
# Phone inventory and viseme targets
# ---------------------------------------------------------------------------

VOWELS = frozenset("aa ae ah ao aw ay eh er ey ih iy ow oy uh uw".split())
BILABIALS = frozenset({"p", "b", "m"})
LABIODENTALS = frozenset({"f", "v"})
ROUNDED = frozenset({"uw", "ow", "uh", "ao", "oy", "w"})
PHONES = frozenset(
    "aa ae ah ao aw ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy p r s sh "
    "t th uh uw v w y z zh pau".split()
)
# Silence labels other aligners print; they all mean "pau".
_SILENCE_ALIASES = {"sil", "sp", "h#", "", "_", "spn"}
# Function words carry no stress nods; everything else is a content word.
_FUNCTION_WORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been am "
    "i you he she it we they me him her us them my your his its our their this that these "
    "those there here so not no do does did have has had will would can could shall should "
    "may might must just than then too very oh um uh yeah mm hm".split()
)

# Mouth channels the visemes drive, split into two articulator groups with their
# own dominance: the jaw (opening) and the lips (shape). A lingual consonant
# constrains the jaw but hardly the lips, which is how lip rounding of a vowel
# spreads over neighbouring t/s/k in real speech.
_JAW_CHANNELS = ("jawOpen", "mouthLowerDownLeft", "mouthLowerDownRight",
                 "mouthUpperUpLeft", "mouthUpperUpRight")
_LIP_CHANNELS = ("mouthClose", "mouthFunnel", "mouthPucker", "mouthStretchLeft",
                 "mouthStretchRight", "mouthRollLower", "mouthRollUpper",
                 "mouthPressLeft", "mouthPressRight")
_VISEME_CHANNELS = _JAW_CHANNELS + _LIP_CHANNELS
_VISEME_INDEX = np.array([idx(n) for n in _VISEME_CHANNELS])
_NUM_JAW = len(_JAW_CHANNELS)


def _shape(jaw=0.0, lower=0.0, upper=0.0, close=0.0, funnel=0.0, pucker=0.0,
           stretch=0.0, roll_lower=0.0, roll_upper=0.0, press=0.0) -> np.ndarray:
    """Absolute target values (MediaPipe scale) of the viseme channels."""
    values = [jaw, lower, lower, upper, upper, close, funnel, pucker, stretch, stretch,
              roll_lower, roll_upper, press, press]
    return np.array(values, dtype=np.float32)


# Target mouth shapes. Jaw opening follows vowel openness
# (aa > ae/ah/ao > eh > ih/iy/uw); values are what MediaPipe reads in speech.
_TARGETS: dict[str, np.ndarray] = {
    "aa": _shape(jaw=0.50, lower=0.30, upper=0.08),
    "ae": _shape(jaw=0.40, lower=0.28, upper=0.15, stretch=0.12),
    "ah": _shape(jaw=0.36, lower=0.20, upper=0.06),
    "ao": _shape(jaw=0.38, lower=0.18, funnel=0.30, pucker=0.20),
    "aw": _shape(jaw=0.42, lower=0.24, funnel=0.15, pucker=0.15),
    "ay": _shape(jaw=0.42, lower=0.24, upper=0.08, stretch=0.08),
    "eh": _shape(jaw=0.28, lower=0.18, upper=0.08, stretch=0.12),
    "er": _shape(jaw=0.20, lower=0.08, funnel=0.20, pucker=0.25),
    "ey": _shape(jaw=0.24, lower=0.14, upper=0.06, stretch=0.18),
    "ih": _shape(jaw=0.17, lower=0.10, upper=0.05, stretch=0.16),
    "iy": _shape(jaw=0.13, lower=0.08, upper=0.05, stretch=0.26),
    "ow": _shape(jaw=0.28, lower=0.10, funnel=0.35, pucker=0.45),
    "oy": _shape(jaw=0.30, lower=0.12, funnel=0.30, pucker=0.35),
    "uh": _shape(jaw=0.18, lower=0.06, funnel=0.20, pucker=0.32),
    "uw": _shape(jaw=0.13, lower=0.04, funnel=0.28, pucker=0.60),
    # Bilabials: jaw nearly shut, lips pressed together.
    "p": _shape(jaw=0.04, close=0.20, press=0.32, roll_lower=0.08, roll_upper=0.06),
    "b": _shape(jaw=0.04, close=0.20, press=0.28, roll_lower=0.08, roll_upper=0.06),
    "m": _shape(jaw=0.04, close=0.18, press=0.30, roll_lower=0.06, roll_upper=0.05),
    # Labiodentals: lower lip tucked under the upper teeth.
    "f": _shape(jaw=0.07, upper=0.25, roll_lower=0.45, press=0.08),
    "v": _shape(jaw=0.07, upper=0.22, roll_lower=0.40, press=0.06),
    "th": _shape(jaw=0.12, lower=0.08, upper=0.06),
    "dh": _shape(jaw=0.11, lower=0.07, upper=0.05),
    "t": _shape(jaw=0.10, lower=0.06, upper=0.04, stretch=0.06),
    "d": _shape(jaw=0.10, lower=0.06, upper=0.04, stretch=0.05),
    "n": _shape(jaw=0.10, lower=0.05, upper=0.03),
    "l": _shape(jaw=0.13, lower=0.08, upper=0.04),
    "s": _shape(jaw=0.07, lower=0.06, upper=0.06, stretch=0.14),
    "z": _shape(jaw=0.07, lower=0.06, upper=0.05, stretch=0.12),
    "sh": _shape(jaw=0.09, lower=0.08, upper=0.10, funnel=0.30, pucker=0.25),
    "zh": _shape(jaw=0.09, lower=0.08, upper=0.09, funnel=0.28, pucker=0.22),
    "ch": _shape(jaw=0.09, lower=0.08, upper=0.10, funnel=0.28, pucker=0.22),
    "jh": _shape(jaw=0.09, lower=0.08, upper=0.09, funnel=0.26, pucker=0.20),
    "k": _shape(jaw=0.14, lower=0.06, upper=0.03),
    "g": _shape(jaw=0.14, lower=0.06, upper=0.03),
    "ng": _shape(jaw=0.12, lower=0.05, upper=0.03),
    "hh": _shape(jaw=0.22, lower=0.10, upper=0.04),
    "r": _shape(jaw=0.12, lower=0.05, funnel=0.18, pucker=0.28),
    "w": _shape(jaw=0.08, funnel=0.22, pucker=0.62),
    "y": _shape(jaw=0.10, lower=0.05, stretch=0.16),
    "pau": np.array([REST[i] for i in _VISEME_INDEX], dtype=np.float32),
}

# Dominance strength per phone, (jaw group, lip group).
_DOMINANCE: dict[str, tuple[float, float]] = {
    **{v: (1.0, 1.0) for v in VOWELS},
    **{c: (8.0, 8.0) for c in BILABIALS},
    **{c: (3.0, 6.0) for c in LABIODENTALS},
    **{c: (1.0, 0.25) for c in ("t", "d", "n", "l", "s", "z", "th", "dh", "y")},
    **{c: (0.8, 0.2) for c in ("k", "g", "ng")},
    **{c: (1.0, 2.0) for c in ("sh", "zh", "ch", "jh")},
    "r": (0.8, 1.2),
    "w": (1.0, 3.0),
    "hh": (0.25, 0.1),
    "pau": (0.6, 0.6),
}

_PHONE_LIST = sorted(PHONES)
_PHONE_ID = {p: i for i, p in enumerate(_PHONE_LIST)}
_TARGET_TABLE = np.stack([_TARGETS[p] for p in _PHONE_LIST])            # [P, C]
_DOMINANCE_TABLE = np.array([_DOMINANCE[p] for p in _PHONE_LIST], np.float32)  # [P, 2]
_PAU_ID = _PHONE_ID["pau"]
_IS_VOWEL = np.array([p in VOWELS for p in _PHONE_LIST])

# Background weight of the rest shape: where no phone dominates (long silence)
# the mouth returns to rest; small enough never to pull speech toward it.
_BACKGROUND_DOMINANCE = 0.02


_PHONE_ALIASES = {"ax": "ah", "axr": "er", "ix": "ih", "dx": "t", "el": "l", "em": "m", "en": "n"}


def normalise_phone(label: str) -> str:
    """ARPAbet as flite prints it: lower case, no stress digit; silences -> "pau"."""
    phone = str(label).strip().lower().rstrip("012")
    if phone in _SILENCE_ALIASES:
        return "pau"
    # flite's schwa and syllabic/flap extras are CMUdict phones under other names.
    phone = _PHONE_ALIASES.get(phone, phone)
    if phone not in PHONES:
        raise InputError(
            f"unknown phone {label!r}: the motion rules take lower-case ARPAbet as flite "
            f"prints it ({' '.join(_PHONE_LIST)}); map other phone sets to these first"
        )
    return phone


# ---------------------------------------------------------------------------
# Style
# ---------------------------------------------------------------------------

def sample_style(rng: np.random.Generator) -> dict[str, Any]:
    """Draw one person's style: neutral face and pose, and how they move.

    JSON-serialisable (floats and lists only). ``neutral`` is the frame the
    person's motion returns to and the generator's anchor.
    """
    neutral = REST.astype(np.float64).copy()
    # Resting expression: small person-to-person differences on MediaPipe's scale.
    for name, spread in (("browInnerUp", 0.05), ("browOuterUpLeft", 0.03),
                         ("browOuterUpRight", 0.03), ("browDownLeft", 0.03),
                         ("browDownRight", 0.03), ("eyeBlinkLeft", 0.05),
                         ("eyeBlinkRight", 0.05), ("jawOpen", 0.02),
                         ("mouthPressLeft", 0.02), ("mouthPressRight", 0.02)):
        neutral[idx(name)] += rng.uniform(0.0, spread)
    asymmetry = rng.uniform(-0.02, 0.02)
    neutral[idx("eyeBlinkRight")] = neutral[idx("eyeBlinkLeft")] + asymmetry
    # Neutral head pose, kept well inside the decoder's supported range so that
    # the motion around it stays inside too.
    for name, limit_deg, spread_deg in (("pitch", 6.0, 3.0), ("yaw", 8.0, 4.0),
                                        ("roll", 5.0, 2.5)):
        neutral[idx(name)] = math.radians(float(np.clip(rng.normal(0, spread_deg),
                                                        -limit_deg, limit_deg)))
    neutral[idx("tx")] = float(np.clip(rng.normal(0, 0.02), -0.05, 0.05))
    neutral[idx("ty")] = float(np.clip(rng.normal(0, 0.02), -0.05, 0.05))
    neutral[idx("log_scale")] = float(np.clip(rng.normal(0, 0.05), -0.12, 0.12))
    expr = slice(0, idx("pitch"))
    neutral[expr] = np.clip(neutral[expr], 0.0, 1.0)

    return {
        "neutral": [float(v) for v in neutral],
        # Scales head motion (sway, nods) relative to an average person.
        "amplitude": float(np.exp(rng.normal(0.0, 0.25))),
        # Scales mouth movements (some people articulate more).
        "articulation": float(rng.uniform(0.85, 1.15)),
        # Chance of nodding after a partner's phrase end while listening.
        "nod_probability": float(rng.uniform(0.35, 0.85)),
        # Chance of a small nod on a stressed syllable while speaking.
        "speaking_nod_probability": float(rng.uniform(0.1, 0.35)),
        "smile_baseline": float(rng.uniform(0.02, 0.15)),
        "smiles_per_minute": float(rng.uniform(0.5, 3.0)),
        "blinks_per_minute": float(rng.uniform(10.0, 24.0)),
        "anticipation_lead_s": float(rng.uniform(0.05, 0.15)),
        "listening_nod_delay_mean_s": float(rng.uniform(0.28, 0.42)),
        "breathing_hz": float(rng.uniform(0.2, 0.3)),
    }


_STYLE_KEYS = ("neutral", "amplitude", "articulation", "nod_probability",
               "speaking_nod_probability", "smile_baseline", "smiles_per_minute",
               "blinks_per_minute", "anticipation_lead_s", "listening_nod_delay_mean_s",
               "breathing_hz")


def _check_style(style: dict[str, Any]) -> np.ndarray:
    missing = [k for k in _STYLE_KEYS if k not in style]
    if missing:
        raise InputError(f"style lacks {', '.join(missing)}: make it with sample_style(rng)")
    neutral = np.asarray(style["neutral"], dtype=np.float64)
    if neutral.shape != (MOTION_DIM,):
        raise InputError(f"style['neutral'] must hold {MOTION_DIM} floats, got shape {neutral.shape}")
    return neutral


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def _frame_times(num_frames: int) -> np.ndarray:
    """Centre time of every frame (frame t covers [t, t+1) / fps)."""
    return (np.arange(num_frames) + 0.5) / FPS


def speaking_mask(labels: PartyLabels, num_frames: int) -> np.ndarray:
    """Per-frame bool: inside one of the party's phrases or backchannels."""
    mask = np.zeros(num_frames, dtype=bool)
    for start, end in [*labels.phrases, *labels.backchannels]:
        a = max(int(math.floor(start * FPS)), 0)
        b = max(int(math.ceil(end * FPS)), 0)
        mask[a:b] = True
    return mask


def _frame_rms(audio: np.ndarray, num_frames: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    need = num_frames * SAMPLES_PER_FRAME
    if audio.size < need:
        audio = np.pad(audio, (0, need - audio.size))
    frames = audio[:need].reshape(num_frames, SAMPLES_PER_FRAME)
    # Sum of squares in float32 without a float64 copy of the whole track (speed).
    return np.sqrt(np.einsum("ij,ij->i", frames, frames) / SAMPLES_PER_FRAME).astype(np.float64)


def _smooth_step(mask: np.ndarray, ramp_frames: int) -> np.ndarray:
    """A bool mask as a float in [0, 1] with linear ramps (moving average)."""
    if ramp_frames <= 1:
        return mask.astype(np.float64)
    kernel = np.ones(ramp_frames) / ramp_frames
    # Centred moving average of the same length, also for masks shorter than the kernel.
    full = np.convolve(mask.astype(np.float64), kernel)
    start = (ramp_frames - 1) // 2
    return full[start:start + mask.size]


def _smooth_noise(rng: np.random.Generator, num_frames: int, time_constant_s: float,
                  std: float, channels: int) -> np.ndarray:
    """Zero-mean, mean-reverting smooth noise [T, channels] with stationary std ``std``.

    Two cascaded first-order (Ornstein-Uhlenbeck) filters: mean-reverting, so it
    never drifts away, and smooth enough to have head-like velocities.
    """
    a = math.exp(-1.0 / (FPS * time_constant_s))
    burn_in = int(4 * FPS * time_constant_s) + 1
    white = rng.standard_normal((num_frames + burn_in, channels))
    once = lfilter([1.0], [1.0, -a], white, axis=0)
    twice = lfilter([1.0 - a], [1.0, -a], once, axis=0)
    # Stationary variance of the cascade for unit white input.
    variance = (1.0 - a) ** 2 * (1.0 + a * a) / (1.0 - a * a) ** 3
    return twice[burn_in:] * (std / math.sqrt(variance))


def _place_events(num_frames: int, times_s: np.ndarray, amplitudes: np.ndarray,
                  kernel: np.ndarray, centre: int) -> np.ndarray:
    """Sum of ``kernel`` copies whose sample ``centre`` lands at each time (sub-frame).

    An event at a fractional frame position is split between its two
    neighbouring frames (linear interpolation), then the impulse train is
    convolved with the kernel.
    """
    impulses = np.zeros(num_frames + len(kernel) * 2)
    if len(times_s):
        pos = np.asarray(times_s) * FPS - 0.5 + len(kernel)  # frame centres at (i+0.5)/fps
        base = np.floor(pos).astype(int)
        frac = pos - base
        amp = np.asarray(amplitudes, dtype=np.float64)
        ok = (base >= 0) & (base + 1 < impulses.size)
        np.add.at(impulses, base[ok], amp[ok] * (1.0 - frac[ok]))
        np.add.at(impulses, base[ok] + 1, amp[ok] * frac[ok])
    full = np.convolve(impulses, kernel)
    start = len(kernel) + centre
    return full[start:start + num_frames]


def _raised_cosine(left_s: float, right_s: float) -> tuple[np.ndarray, int]:
    """An asymmetric bump with value 1 at its centre sample; (kernel, centre index)."""
    left = int(math.ceil(left_s * FPS))
    right = int(math.ceil(right_s * FPS))
    t = np.arange(-left, right + 1) / FPS
    width = np.where(t < 0, left_s, right_s)
    kernel = np.where(np.abs(t) < width, 0.5 * (1 + np.cos(np.pi * t / width)), 0.0)
    return kernel, left


_NOD_KERNEL, _NOD_CENTRE = _raised_cosine(0.25, 0.35)
_BROW_KERNEL, _BROW_CENTRE = _raised_cosine(0.2, 0.45)
# Eyelid closure: fast down, slower up; peak at the closure time.
_BLINK_KERNEL = np.array([0.0, 0.45, 1.0, 0.75, 0.4, 0.15, 0.0])
_BLINK_CENTRE = 2


# ---------------------------------------------------------------------------
# Articulation
# ---------------------------------------------------------------------------

def _phone_arrays(phones: list[list[Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not phones:
        return np.zeros(0, int), np.zeros(0), np.zeros(0)
    try:
        ids = np.array([_PHONE_ID[normalise_phone(p[0])] for p in phones])
        starts = np.array([float(p[1]) for p in phones])
        ends = np.array([float(p[2]) for p in phones])
    except (IndexError, TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"phones must be [phone, start_s, end_s] triples ({exc})") from None
    if np.any(ends < starts) or not np.all(np.isfinite(starts)) or not np.all(np.isfinite(ends)):
        raise InputError("phone end times must be finite and not before their start times")
    order = np.argsort(starts, kind="stable")
    return ids[order], starts[order], ends[order]


def _articulate(ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, num_frames: int,
                lead_s: float) -> np.ndarray:
    """Viseme channels [T, C] (absolute values) by dominance-weighted blending."""
    channels = len(_VISEME_CHANNELS)
    rest = _TARGETS["pau"].astype(np.float64)
    if ids.size == 0:
        return np.tile(rest, (num_frames, 1))
    durations = np.clip(ends - starts, 0.02, 0.35)
    centres = 0.5 * (starts + ends)
    is_pau = ids == _PAU_ID
    # Phrase-initial phones: the first speech phone after a silence (or at the
    # start). Their dominance reaches back by the lead: lips move before sound.
    previous_pau = np.concatenate([[True], is_pau[:-1]])
    gap_before = np.concatenate([[np.inf], starts[1:] - ends[:-1]])
    initial = ~is_pau & (previous_pau | (gap_before > 0.05))
    out = np.empty((num_frames, channels))
    targets = _TARGET_TABLE[ids].astype(np.float64)                     # [N, C]
    groups = (
        # (columns, dominance width as a fraction of the phone, anticipation as a
        # fraction of the lead). The jaw peaks sharply on its vowel and barely
        # anticipates; lip shape (rounding, closure) spreads ahead further.
        (slice(0, _NUM_JAW), 0.4, 0.1),
        (slice(_NUM_JAW, channels), 0.5, 0.25),
    )
    for group, (cols, width, anticipation) in enumerate(groups):
        # Width of the dominance before / after the phone centre. Anticipatory
        # coarticulation: a phone's influence starts earlier than it ends.
        sigma_post = width * durations + 0.012
        sigma_pre = width * durations + anticipation * lead_s
        sigma_pre = np.where(initial, width * durations + lead_s, sigma_pre)
        # A pause shapes the mouth only near its own edges and gives way early to
        # the next phone; its width is capped so long silences fall to the background.
        sigma_pre = np.where(is_pau, np.minimum(sigma_pre, 0.08), sigma_pre)
        sigma_post = np.where(is_pau, np.minimum(sigma_post, 0.08), sigma_post)

        reach = 2.5 * np.maximum(sigma_pre, sigma_post)
        half_window = int(math.ceil(float(reach.max()) * FPS)) + 1
        offsets = np.arange(-half_window, half_window + 1)
        centre_frame = np.floor(centres * FPS).astype(int)
        frames = centre_frame[:, None] + offsets[None, :]               # [N, K]
        valid = (frames >= 0) & (frames < num_frames)
        dt = (frames + 0.5) / FPS - centres[:, None]
        sigma = np.where(dt < 0, sigma_pre[:, None], sigma_post[:, None])
        shape = np.exp(-((dt / sigma) ** 2))
        shape = np.where(valid & (np.abs(dt) <= reach[:, None]), shape, 0.0)
        flat_frames = np.where(valid, frames, 0).ravel()

        weight = (shape * _DOMINANCE_TABLE[ids, group][:, None]).ravel()
        total = np.bincount(flat_frames, weights=weight, minlength=num_frames)
        total += _BACKGROUND_DOMINANCE
        for c in range(cols.start, cols.stop):
            wsum = np.bincount(flat_frames,
                               weights=weight * np.repeat(targets[:, c], offsets.size),
                               minlength=num_frames)
            out[:, c] = (wsum + _BACKGROUND_DOMINANCE * rest[c]) / total
    # Articulatory activity: 0 at rest, 1 while speaking. Each run of speech
    # phones is entered over the anticipation lead before its first sound (lips
    # start moving that long before the audio) and left over a short release.
    activity = _speech_activity(starts[~is_pau], ends[~is_pau], num_frames, lead_s)
    return rest + activity[:, None] * (out - rest)


def _speech_activity(starts: np.ndarray, ends: np.ndarray, num_frames: int,
                     lead_s: float, release_s: float = 0.12, join_gap_s: float = 0.25) -> np.ndarray:
    times = _frame_times(num_frames)
    activity = np.zeros(num_frames)
    if starts.size == 0:
        return activity
    order = np.argsort(starts)
    starts, ends = starts[order], np.maximum.accumulate(ends[order])
    # Runs of speech: phones separated by less than join_gap_s belong together.
    new_run = np.concatenate([[True], starts[1:] - ends[:-1] > join_gap_s])
    run_id = np.cumsum(new_run) - 1
    run_start = starts[new_run]
    run_end = np.zeros(run_start.size)
    np.maximum.at(run_end, run_id, ends)
    for a, b in zip(run_start, run_end):
        lo = max(int(math.floor((a - lead_s) * FPS)), 0)
        hi = min(int(math.ceil((b + release_s) * FPS)) + 1, num_frames)
        if hi <= lo:
            continue
        t = times[lo:hi]
        rise = np.clip((t - (a - lead_s)) / lead_s, 0.0, 1.0)
        fall = np.clip(((b + release_s) - t) / release_s, 0.0, 1.0)
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))
        activity[lo:hi] = np.maximum(activity[lo:hi], ramp)
    return activity


# ---------------------------------------------------------------------------
# The party's motion
# ---------------------------------------------------------------------------

def _interval_mask(intervals: list[list[float]], num_frames: int, pad_s: float = 0.0) -> np.ndarray:
    mask = np.zeros(num_frames, dtype=bool)
    for start, end in intervals:
        a = max(int(math.floor((start - pad_s) * FPS)), 0)
        b = max(int(math.ceil((end + pad_s) * FPS)), 0)
        mask[a:b] = True
    return mask


def _thin(times: np.ndarray, min_gap_s: float) -> np.ndarray:
    """Keep events (sorted) at least ``min_gap_s`` apart; returns the kept indices."""
    kept: list[int] = []
    last = -np.inf
    for i in np.argsort(times, kind="stable"):
        if times[i] - last >= min_gap_s:
            kept.append(int(i))
            last = times[i]
    return np.array(sorted(kept), dtype=int)


def animate_party(own: PartyLabels, partner: PartyLabels, own_audio: np.ndarray,
                  num_frames: int, style: dict[str, Any],
                  rng: np.random.Generator) -> tuple[np.ndarray, PartyLabels]:
    """Motion [num_frames, MOTION_DIM] float32 of one party, and its labels with
    ``nods``, ``blinks`` and ``smiles`` filled in (the same object, updated)."""
    if num_frames < 0:
        raise InputError(f"num_frames must be >= 0, got {num_frames}")
    neutral = _check_style(style)
    own_audio = np.asarray(own_audio, dtype=np.float32)
    if own_audio.ndim != 1:
        raise InputError(f"own_audio must be mono [samples] at 16 kHz, got shape {own_audio.shape}")
    if num_frames == 0:
        own.nods, own.blinks, own.smiles = [], [], []
        return np.zeros((0, MOTION_DIM), dtype=np.float32), own
    duration_s = num_frames / FPS
    times = _frame_times(num_frames)
    amplitude = float(style["amplitude"])
    lead = float(style["anticipation_lead_s"])

    motion = np.tile(neutral, (num_frames, 1))
    speaking = speaking_mask(own, num_frames)
    speaking_soft = _smooth_step(speaking, 9)
    listening_soft = 1.0 - speaking_soft

    # --- articulation -----------------------------------------------------
    ids, starts, ends = _phone_arrays(own.phones)
    visemes = _articulate(ids, starts, ends, num_frames, lead)
    rest_visemes = _TARGETS["pau"].astype(np.float64)
    motion[:, _VISEME_INDEX] = neutral[_VISEME_INDEX] + float(style["articulation"]) * (
        visemes - rest_visemes)

    # --- listening smile baseline and smiles ------------------------------
    smile_cols = [idx("mouthSmileLeft"), idx("mouthSmileRight")]
    smile = float(style["smile_baseline"]) * listening_soft
    listening_mask = ~_interval_mask([*own.phrases, *own.backchannels], num_frames, pad_s=0.3)
    listening_minutes = listening_mask.sum() / FPS / 60.0
    num_smiles = rng.poisson(float(style["smiles_per_minute"]) * listening_minutes)
    smiles: list[list[float]] = []
    if num_smiles and listening_mask.any():
        candidates = np.flatnonzero(listening_mask)
        for frame in np.sort(rng.choice(candidates, size=num_smiles)):
            start = (frame + 0.5) / FPS
            length = rng.uniform(1.5, 4.0)
            a, b = int(frame), min(int((start + length) * FPS), num_frames)
            # The smile ends early where the person starts to talk.
            stop = a + int(np.argmin(listening_mask[a:b])) if not listening_mask[a:b].all() else b
            if stop - a < int(0.8 * FPS) or any(s <= start <= e for s, e in smiles):
                continue
            smiles.append([float(start), float(stop / FPS)])
    if smiles:
        smile_on = _interval_mask(smiles, num_frames)
        smile_strength = rng.uniform(0.15, 0.35)
        smile = smile + smile_strength * _smooth_step(smile_on, 7)
    motion[:, smile_cols[0]] += smile
    motion[:, smile_cols[1]] += smile * rng.uniform(0.85, 1.0)

    # --- head: mean-reverting sway, breathing -----------------------------
    rotation = slice(idx("pitch"), idx("roll") + 1)
    scale_deg = np.radians([1.0, 1.4, 0.7]) * amplitude
    lively = _smooth_noise(rng, num_frames, 0.6, 1.0, 3) * (2.0 * scale_deg)
    calm = _smooth_noise(rng, num_frames, 2.0, 1.0, 3) * scale_deg
    wander = _smooth_noise(rng, num_frames, 6.0, 1.0, 3) * (0.6 * scale_deg)
    head = speaking_soft[:, None] * lively + listening_soft[:, None] * calm + wander
    breath_phase = rng.uniform(0, 2 * np.pi)
    breath = np.sin(2 * np.pi * float(style["breathing_hz"]) * times + breath_phase)
    head[:, 0] += math.radians(0.3) * amplitude * breath

    # --- nods: listening (after partner phrase ends) and stressed syllables --
    nod_times: list[np.ndarray] = []
    nod_amps: list[np.ndarray] = []
    partner_ends = np.array([float(p[1]) for p in partner.phrases]) if partner.phrases else np.zeros(0)
    own_busy = _interval_mask(own.phrases, num_frames, pad_s=0.2)
    if partner_ends.size:
        delays = np.clip(rng.normal(float(style["listening_nod_delay_mean_s"]), 0.05,
                                    partner_ends.size), 0.2, 0.5)
        peak = partner_ends + delays
        frames_at = np.clip(np.floor(peak * FPS).astype(int), 0, max(num_frames - 1, 0))
        before = np.clip(np.floor((partner_ends - 0.3) * FPS).astype(int), 0, max(num_frames - 1, 0))
        free = (peak + 0.4 < duration_s) & (partner_ends > 0.3)
        if num_frames:
            free &= ~own_busy[frames_at] & ~own_busy[before]
        # A backchannel from the listener almost always comes with a nod.
        near_backchannel = np.zeros(partner_ends.size, dtype=bool)
        for start, _ in own.backchannels:
            near_backchannel |= (start >= partner_ends - 0.1) & (start <= partner_ends + 1.0)
        p_nod = np.where(near_backchannel, 0.95, float(style["nod_probability"]))
        chosen = free & (rng.random(partner_ends.size) < p_nod)
        nod_times.append(peak[chosen])
        nod_amps.append(np.radians(rng.uniform(2.2, 4.5, int(chosen.sum()))) * amplitude)

    stressed: list[float] = []
    if ids.size and num_frames:
        rms = _frame_rms(own_audio, num_frames)
        loud = np.percentile(rms[speaking], 60) if speaking.any() else np.inf
        content_spans = [(float(w[1]), float(w[2])) for w in own.words
                         if str(w[0]).lower().strip(".,!?'\"") not in _FUNCTION_WORDS
                         and len(str(w[0])) > 3]
        vowel = _IS_VOWEL[ids] & (ends - starts >= 0.09)
        centres = 0.5 * (starts + ends)
        if content_spans:
            spans = np.array(content_spans)
            in_content = np.any((centres[:, None] >= spans[None, :, 0]) &
                                (centres[:, None] <= spans[None, :, 1]), axis=1)
        else:
            in_content = np.zeros_like(vowel)
        frame_of = np.clip(np.floor(centres * FPS).astype(int), 0, num_frames - 1)
        candidate = vowel & in_content & (rms[frame_of] >= loud)
        stressed = list(centres[candidate])
    stressed_arr = np.array(stressed)
    if stressed_arr.size:
        kept = stressed_arr[_thin(stressed_arr, 0.8)]
        chosen = rng.random(kept.size) < float(style["speaking_nod_probability"])
        # The nod's lowest point lands on the vowel, slightly after its centre.
        nod_times.append(kept[chosen] + 0.04)
        nod_amps.append(np.radians(rng.uniform(1.2, 2.5, int(chosen.sum()))) * amplitude)
        # Brow raises on emphasis: the strongest stressed syllables.
        brows = kept[rng.random(kept.size) < 0.35]
        brow_curve = _place_events(num_frames, brows, rng.uniform(0.12, 0.3, brows.size),
                                   _BROW_KERNEL, _BROW_CENTRE)
        for name, gain in (("browInnerUp", 1.0), ("browOuterUpLeft", 0.8), ("browOuterUpRight", 0.8)):
            motion[:, idx(name)] += gain * brow_curve

    all_nod_times = np.concatenate(nod_times) if nod_times else np.zeros(0)
    all_nod_amps = np.concatenate(nod_amps) if nod_amps else np.zeros(0)
    keep = _thin(all_nod_times, 0.9) if all_nod_times.size else np.zeros(0, int)
    all_nod_times, all_nod_amps = all_nod_times[keep], all_nod_amps[keep]
    head[:, 0] += _place_events(num_frames, all_nod_times, all_nod_amps, _NOD_KERNEL, _NOD_CENTRE)

    motion[:, rotation] += head
    # Translation follows the head a little (the neck pivots below the face).
    motion[:, idx("tx")] += 0.25 * head[:, 1]
    motion[:, idx("ty")] += 0.15 * head[:, 0] + 0.002 * amplitude * breath
    motion[:, idx("log_scale")] += _smooth_noise(rng, num_frames, 3.0, 0.01 * amplitude, 1)[:, 0]

    # --- blinks ----------------------------------------------------------
    rate_hz = float(style["blinks_per_minute"]) / 60.0
    spontaneous = np.sort(rng.uniform(0, duration_s, rng.poisson(rate_hz * duration_s)))
    boundaries = np.array([t for ph in own.phrases for t in ph], dtype=np.float64)
    boundary_blinks = boundaries[rng.random(boundaries.size) < 0.35]
    boundary_blinks = boundary_blinks + rng.uniform(0.0, 0.2, boundary_blinks.size)
    blink_times = np.concatenate([spontaneous, boundary_blinks])
    blink_times = blink_times[(blink_times > 0.1) & (blink_times < duration_s - 0.2)]
    blink_times = blink_times[_thin(blink_times, 0.6)] if blink_times.size else blink_times
    blink_curve = _place_events(num_frames, blink_times, np.ones(blink_times.size),
                                _BLINK_KERNEL, _BLINK_CENTRE)
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        col = idx(name)
        depth = rng.uniform(0.7, 0.85) - neutral[col]
        motion[:, col] += depth * blink_curve

    # --- limits ---------------------------------------------------------
    limits = np.radians([POSE_LIMIT_DEGREES["pitch"], POSE_LIMIT_DEGREES["yaw"],
                         POSE_LIMIT_DEGREES["roll"]])
    motion[:, rotation] = np.clip(motion[:, rotation], -limits, limits)
    expr = slice(0, idx("pitch"))
    motion[:, expr] = np.clip(motion[:, expr], 0.0, 1.0)
    for name in ("tx", "ty", "log_scale"):
        col = idx(name)
        motion[:, col] = np.clip(motion[:, col], -0.2, 0.2)

    own.nods = [[float(t), float(a)] for t, a in zip(all_nod_times, all_nod_amps)]
    own.blinks = [float(t) for t in blink_times]
    own.smiles = smiles
    return motion.astype(np.float32), own
