"""Scores of any motion predictor over a set of conversations.

A predictor is a function ``predictor(conversation, party, seed) -> motion [T, D]``.
Every score is pooled over the conversations and both parties, computed per
seed and averaged over seeds; each is also computed on the ground truth
(the conversation's own motion), and the comparisons the project's acceptance
thresholds use (issue 4, "Done when") are reported next to it. All events are
defined in :mod:`dystream.metrics.events`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from dystream.config import FRAMES_PER_SECOND
from dystream.data.schema import Conversation
from dystream.errors import InputError
from dystream.metrics import events as ev
from dystream.motion import MOTION_DIM, idx

Predictor = Callable[[Conversation, int, int], np.ndarray]
# A predictor may also have ``predict_batch(items: list[(conversation, party, seed)])
# -> list[motion]`` and ``batch_items`` (how many items it wants per call): see evaluate_many.

# Conversations at least this long count for the drift measurement.
LONG_CONVERSATION_S = 300.0
MAX_OFFSET_LAG = 10

# Acceptance thresholds of the generator (issue 4), as printed; checked in _compare.
THRESHOLDS: dict[str, str] = {
    "jaw_open_correlation": ">= 0.8",
    "bilabial_closure_rate": ">= 0.9 x GT",
    "envelope_mouth_offset_frames": "GT +/- 1",
    "listening_nods_per_minute": "GT +/- 20%",
    "median_nod_delay_s": "GT +/- 0.15 s",
    "pose_drift_degrees": "<= 2 and <= GT + 1",
}


@dataclass
class _Tally:
    """Running sums of one predictor at one seed (or of the ground truth)."""

    jaw_predicted: list[np.ndarray] = field(default_factory=list)
    jaw_reference: list[np.ndarray] = field(default_factory=list)
    closed: int = 0
    bilabials: int = 0
    xcorr: np.ndarray = field(default_factory=lambda: np.zeros(2 * MAX_OFFSET_LAG + 1))
    listening_minutes: float = 0.0
    nods: int = 0
    phrase_ends: int = 0
    delays: list[float] = field(default_factory=list)
    drifts: list[float] = field(default_factory=list)
    frames: int = 0

    def add(self, conv: Conversation, party: int, motion: np.ndarray, speaking: np.ndarray) -> None:
        reference = conv.motion[party]
        jaw = idx("jawOpen")
        self.jaw_predicted.append(motion[speaking, jaw].astype(np.float64))
        self.jaw_reference.append(reference[speaking, jaw].astype(np.float64))
        closed, total = ev.bilabial_closure_counts(motion, conv.labels[party].phones)
        self.closed += closed
        self.bilabials += total
        _, corr = ev.envelope_mouth_xcorr(conv.audio[party], motion, MAX_OFFSET_LAG)
        self.xcorr += corr * len(motion)  # weight each sequence by its length
        nods = ev.detect_nods(motion)
        partner_ends = [float(end) for _, end in conv.labels[1 - party].phrases]
        timing = ev.nod_timing(nods[:, 0], partner_ends, ~speaking)
        self.listening_minutes += timing["listening_minutes"]
        self.nods += timing["nods"]
        self.phrase_ends += timing["phrase_ends"]
        self.delays += timing["delays_s"]
        if conv.num_frames >= LONG_CONVERSATION_S * FRAMES_PER_SECOND:
            self.drifts.append(ev.pose_drift_degrees(motion, neutral_frame(conv, party)))
        self.frames += len(motion)

    def scores(self) -> dict[str, float]:
        jp = np.concatenate(self.jaw_predicted) if self.jaw_predicted else np.zeros(0)
        jr = np.concatenate(self.jaw_reference) if self.jaw_reference else np.zeros(0)
        lags = np.arange(-MAX_OFFSET_LAG, MAX_OFFSET_LAG + 1)
        nan = float("nan")
        return {
            "jaw_open_correlation": ev.pearson(jp, jr),
            "bilabial_closure_rate": self.closed / self.bilabials if self.bilabials else nan,
            "envelope_mouth_offset_frames": float(lags[int(np.argmax(self.xcorr))]) if self.frames else nan,
            "listening_nods_per_minute": self.nods / self.listening_minutes if self.listening_minutes else nan,
            "nod_response_rate": len(self.delays) / self.phrase_ends if self.phrase_ends else nan,
            "median_nod_delay_s": float(np.median(self.delays)) if self.delays else nan,
            "pose_drift_degrees": float(np.mean(self.drifts)) if self.drifts else nan,
            "pose_drift_max_degrees": float(np.max(self.drifts)) if self.drifts else nan,
        }


def neutral_frame(conv: Conversation, party: int) -> np.ndarray:
    """The party's anchor: ``style[party]["neutral"]`` of synthetic data; shards made
    from real video may carry no style, and then the first frame (the reference
    photo's own motion) stands in."""
    if party < len(conv.style) and "neutral" in conv.style[party]:
        return np.asarray(conv.style[party]["neutral"], dtype=np.float32)
    return np.asarray(conv.motion[party][0], dtype=np.float32)


def _fit(motion: np.ndarray, num_frames: int, name: str) -> np.ndarray:
    motion = np.asarray(motion, dtype=np.float32)
    if motion.ndim != 2 or motion.shape[1] != MOTION_DIM:
        raise InputError(f"predictor {name!r} returned shape {motion.shape}, expected [T, {MOTION_DIM}]")
    if not np.all(np.isfinite(motion)):
        raise InputError(f"predictor {name!r} returned NaN or infinite motion")
    if len(motion) >= num_frames:
        return motion[:num_frames]
    # A predictor may stop a frame short (whole frames of audio only): hold its last frame.
    if len(motion) == 0:
        raise InputError(f"predictor {name!r} returned no frames")
    return np.concatenate([motion, np.repeat(motion[-1:], num_frames - len(motion), axis=0)])


def _compare(scores: dict[str, float], reference: dict[str, float]) -> dict[str, Any]:
    """The acceptance checks of issue 4 (None where undefined, e.g. no long conversations)."""

    def defined(*values: float) -> bool:
        return all(v is not None and not math.isnan(v) for v in values)

    s, r = scores, reference
    out: dict[str, Any] = {}
    out["bilabial_closure_vs_gt"] = (s["bilabial_closure_rate"] / r["bilabial_closure_rate"]
                                     if defined(s["bilabial_closure_rate"], r["bilabial_closure_rate"])
                                     and r["bilabial_closure_rate"] > 0 else float("nan"))
    out["offset_minus_gt_frames"] = s["envelope_mouth_offset_frames"] - r["envelope_mouth_offset_frames"]
    out["nod_rate_vs_gt"] = (s["listening_nods_per_minute"] / r["listening_nods_per_minute"]
                             if defined(s["listening_nods_per_minute"], r["listening_nods_per_minute"])
                             and r["listening_nods_per_minute"] > 0 else float("nan"))
    out["nod_delay_minus_gt_s"] = s["median_nod_delay_s"] - r["median_nod_delay_s"]
    out["drift_minus_gt_degrees"] = s["pose_drift_degrees"] - r["pose_drift_degrees"]

    checks: dict[str, bool | None] = {
        "jaw_open_correlation": (s["jaw_open_correlation"] >= 0.8)
        if defined(s["jaw_open_correlation"]) else None,
        "bilabial_closure_rate": (out["bilabial_closure_vs_gt"] >= 0.9 - 1e-9)
        if defined(out["bilabial_closure_vs_gt"]) else None,
        "envelope_mouth_offset_frames": (abs(out["offset_minus_gt_frames"]) <= 1)
        if defined(out["offset_minus_gt_frames"]) else None,
        "listening_nods_per_minute": (abs(out["nod_rate_vs_gt"] - 1.0) <= 0.2 + 1e-9)
        if defined(out["nod_rate_vs_gt"]) else None,
        "median_nod_delay_s": (abs(out["nod_delay_minus_gt_s"]) <= 0.15 + 1e-9)
        if defined(out["nod_delay_minus_gt_s"]) else None,
        "pose_drift_degrees": (s["pose_drift_degrees"] <= 2.0
                               and out["drift_minus_gt_degrees"] <= 1.0 + 1e-9)
        if defined(s["pose_drift_degrees"], r["pose_drift_degrees"]) else None,
    }
    out["checks"] = {k: (bool(v) if v is not None else None) for k, v in checks.items()}
    return out


def _mean_over_seeds(per_seed: list[dict[str, float]]) -> dict[str, float]:
    keys = per_seed[0].keys()
    out = {}
    for k in keys:
        values = np.array([d[k] for d in per_seed], dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[k] = float(finite.mean()) if finite.size else float("nan")
    return out


def evaluate_many(conversations: Iterable[Conversation], predictors: dict[str, Predictor],
                  seeds: Sequence[int] = (0,), parties: Sequence[int] = (0, 1),
                  max_hours: float | None = None,
                  progress: Callable[[Conversation], None] | None = None) -> dict[str, Any]:
    """One pass over ``conversations`` scoring every predictor (and the ground truth).

    A predictor with a ``predict_batch(items) -> list[motion]`` method (items are
    (conversation, party, seed)) and a ``batch_items`` count is handed groups of at
    least that many items at once (whole conversations); the scores are the same as
    calling it item by item.

    Returns ``{"ground_truth": {...}, name: {...} for each predictor, "data": {...}}``;
    each predictor's entry holds ``scores`` (mean over seeds), ``per_seed``,
    ``vs_ground_truth`` (ratios, differences and the pass/fail ``checks``).
    """
    if not seeds:
        raise InputError("evaluate needs at least one seed")
    reference = _Tally()
    tallies = {name: {seed: _Tally() for seed in seeds} for name in predictors}
    seconds = 0.0
    count = 0
    labelled_nods = detected_labelled = 0
    # Batched predictors (``predict_batch``) see the (conversation, party, seed) items of a
    # group of conversations at once; the group is scored in the same order as one by one.
    group_items = max([getattr(p, "batch_items", 1) for p in predictors.values()], default=1)
    pending: list[Conversation] = []

    def score(group: list[Conversation]) -> None:
        nonlocal labelled_nods, detected_labelled
        items = [(conv, party, seed) for conv in group for party in parties for seed in seeds]
        keys = [(c, party, seed) for c in range(len(group)) for party in parties for seed in seeds]
        batched = {}
        for name, predictor in predictors.items():
            if hasattr(predictor, "predict_batch"):
                motions = list(predictor.predict_batch(items))
                if len(motions) != len(items):
                    raise InputError(f"predictor {name!r} returned {len(motions)} motions for {len(items)} items")
                batched[name] = dict(zip(keys, motions))
        for c, conv in enumerate(group):
            for party in parties:
                speaking = conv.speaking(party)
                gt = conv.motion[party]
                reference.add(conv, party, gt, speaking)
                # How many of the engine's own listening nods the detector finds.
                labelled = [t for t, _ in conv.labels[party].nods
                            if 0 <= int(t * FRAMES_PER_SECOND) < len(speaking)
                            and not speaking[int(t * FRAMES_PER_SECOND)]]
                found = ev.detect_nods(gt)[:, 0]
                labelled_nods += len(labelled)
                detected_labelled += sum(bool(np.any(np.abs(found - t) <= 0.1)) for t in labelled)
                for name, predictor in predictors.items():
                    for seed in seeds:
                        raw = batched[name][(c, party, seed)] if name in batched else predictor(conv, party, seed)
                        motion = _fit(raw, conv.num_frames, name)
                        tallies[name][seed].add(conv, party, motion, speaking)
            if progress is not None:
                progress(conv)

    for conv in conversations:
        if max_hours is not None and count and seconds >= max_hours * 3600.0:
            break
        if conv.audio.shape[1] == 0:
            raise InputError(f"conversation {conv.id} has no audio: read shards with with_audio=True")
        pending.append(conv)
        seconds += conv.duration
        count += 1
        if len(pending) * len(parties) * len(seeds) >= group_items:
            score(pending)
            pending = []
    if pending:
        score(pending)
    if count == 0:
        raise InputError("no conversations to evaluate: is the split empty?")
    ref_scores = reference.scores()
    result: dict[str, Any] = {
        "data": {"conversations": count, "hours": seconds / 3600.0, "parties": list(parties),
                 "seeds": list(seeds),
                 "long_conversations": sum(1 for _ in reference.drifts) // max(len(parties), 1),
                 "labelled_listening_nods": labelled_nods,
                 "nod_detection_recall": detected_labelled / labelled_nods if labelled_nods else float("nan")},
        "thresholds": THRESHOLDS,
        "ground_truth": {"scores": ref_scores, "vs_ground_truth": _compare(ref_scores, ref_scores)},
    }
    for name in predictors:
        per_seed = [tallies[name][seed].scores() for seed in seeds]
        scores = _mean_over_seeds(per_seed)
        result[name] = {"scores": scores, "per_seed": per_seed,
                        "vs_ground_truth": _compare(scores, ref_scores)}
    return result


def evaluate(conversations: Iterable[Conversation], predictor: Predictor,
             seeds: Sequence[int] = (0,), **kwargs: Any) -> dict[str, Any]:
    """Scores of one predictor: its ``scores``, ``per_seed``, ``vs_ground_truth``
    (with ``checks``), and the ground truth's own ``ground_truth`` scores."""
    result = evaluate_many(conversations, {"predictor": predictor}, seeds, **kwargs)
    out = dict(result["predictor"])
    out["ground_truth"] = result["ground_truth"]["scores"]
    out["data"] = result["data"]
    return out
