"""Classifier-free guidance over the generator's three conditions.

Branches (which conditions a branch keeps): none = {}, self = {self audio},
other = {other audio}, anchor = {anchor}, all = {self, other, anchor}. Dropped
conditions are replaced by learned null embeddings, exactly as condition dropout
does in training. The x0 predictions are combined as

    x0 = u + w_self (self - u) + w_other (other - u) + w_anchor (anchor - u) + w_all (all - u)

with u the "none" branch. Branches whose weight is zero are not computed; the
rest run as one batch.

The head pose channels (pitch .. log_scale) can take their own weights
(``pose_guidance``), in one of two forms:

* a scale s in [0, 1]: the pose's coefficients are s * c + (1 - s) * e_all, with c
  the coefficients of every other channel and e_all the "all" branch alone (s = 1:
  the same guidance everywhere; s = 0: the pose is the "all" branch's prediction);
* a dict of branch weights, merged over the expression weights (as ``guidance`` is
  merged over the paper defaults): {"self": 0} guides the pose by everything but
  the self audio.

Why: on the bundled weights the self-audio term of the guidance, extrapolated on
the pose, walks the head away from the anchor over minutes (the expression
channels, lip-sync, want that term); without it the pose stays near the anchor and
the partner-audio term still drives the listening nods. The combination is one
small op either way: a [n] coefficient vector (matmul) when every channel shares
the weights, an [n, D] one (multiply and sum over the branches) otherwise.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from numbers import Real

import torch

from dystream.errors import InputError
from dystream.motion import MOTION_DIM, POSE_SLICE

# Branch names, in the order the model batches them.
BRANCHES: tuple[str, ...] = ("none", "self", "other", "anchor", "all")
# Paper defaults: u + 0.5 (self - u) + 0.5 (other - u) + 1.0 (all - u).
DEFAULT_GUIDANCE: dict[str, float] = {"self": 0.5, "other": 0.5, "anchor": 0.0, "all": 1.0}
# The head pose channels' own guidance: branch weights merged over the ones above, or a
# scale s in [0, 1] toward the "all" branch (1 = the paper: every channel guided alike).
# Default: no self-audio term on the pose (it walks the head away from the anchor over
# minutes), a partner-audio term (it drives the listening nods) and "all" at 0.75; the
# same 4 branches run. The partner-audio weight (0.7) was chosen on the synthetic val
# split's listening nods with the bundled weights (lab/LOG.md); other weights may want
# another.
DEFAULT_POSE_GUIDANCE: float | dict[str, float] = {"self": 0.0, "other": 0.7, "all": 0.75}

_KEEPS = {  # branch -> (self audio, other audio, anchor)
    "none": (False, False, False),
    "self": (True, False, False),
    "other": (False, True, False),
    "anchor": (False, False, True),
    "all": (True, True, True),
}


@dataclass(frozen=True)
class GuidancePlan:
    """Branches to run (in batch order) and the weight of each (0 for the base "none").

    ``pose_weights`` (same order) are the head pose channels' own branch weights, or
    None where they use ``weights`` like every other channel.
    """

    branches: tuple[str, ...]
    weights: tuple[float, ...]
    pose_weights: tuple[float, ...] | None = None

    @property
    def size(self) -> int:
        return len(self.branches)

    def keep_masks(self, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Bool [n] per condition: does branch i keep self audio / other audio / anchor."""
        keeps = torch.tensor([_KEEPS[b] for b in self.branches], dtype=torch.bool, device=device)
        return keeps[:, 0], keeps[:, 1], keeps[:, 2]

    def _coefficients(self, weights: tuple[float, ...]) -> list[float]:
        coefficients = list(weights)
        if self.size > 1:
            coefficients[0] = 1.0 - sum(weights[1:])
        return coefficients

    def weight_tensor(self, device=None, dtype=torch.float32, dim: int = MOTION_DIM) -> torch.Tensor:
        """Coefficients with guided x0 = sum_i c_i x0_i: the base "none" gets 1 - sum(w).

        [n] when every channel shares them; [n, dim] (a column per motion channel) when
        the pose has its own weights.
        """
        coefficients = torch.tensor(self._coefficients(self.weights), device=device, dtype=dtype)
        if self.pose_weights is None:
            return coefficients
        if dim != MOTION_DIM:
            raise InputError(f"per-channel pose guidance needs {MOTION_DIM} motion channels, not {dim}")
        per_channel = coefficients[:, None].repeat(1, dim)
        pose = torch.tensor(self._coefficients(self.pose_weights), device=device, dtype=dtype)
        per_channel[:, POSE_SLICE] = pose[:, None]
        return per_channel

    def combine(self, x0: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """x0 [..., n, D] per branch -> guided x0 [..., D] (one small op); coefficients from
        ``weight_tensor`` ([n]: a matmul; [n, D]: a weighted sum over the branches)."""
        if self.size == 1:
            return x0[..., 0, :]
        if coefficients.dim() == 1:
            return coefficients @ x0
        return (coefficients * x0).sum(-2)


def _merge(base: dict[str, float], weights: dict[str, float] | None, what: str) -> dict[str, float]:
    merged = dict(base)
    if weights:
        unknown = set(weights) - set(BRANCHES[1:])
        if unknown:
            raise InputError(f"unknown {what} branch {sorted(unknown)}; use {', '.join(BRANCHES[1:])}")
        for k, v in weights.items():
            try:
                merged[k] = float(v)
            except (TypeError, ValueError):
                raise InputError(f"{what} weight of {k!r} must be a number, got {v!r}") from None
            if not math.isfinite(merged[k]):
                raise InputError(f"{what} weight of {k!r} must be finite, got {v!r}")
    return merged


def pose_weights(weights: dict[str, float], pose_guidance) -> dict[str, float]:
    """The pose channels' branch weights for ``pose_guidance`` (a scale or a dict, see the
    module docstring); ``weights`` are the merged expression weights (every branch named)."""
    if isinstance(pose_guidance, dict):
        return _merge(weights, pose_guidance, "pose guidance")
    if isinstance(pose_guidance, bool) or not isinstance(pose_guidance, Real) \
            or not 0.0 <= float(pose_guidance) <= 1.0:
        raise InputError(f"pose guidance must be a scale in [0, 1] (1: the same guidance as the "
                         f"expression, 0: the \"all\" branch only) or a dict of branch weights, "
                         f"got {pose_guidance!r}")
    s = float(pose_guidance)
    if s == 1.0:
        return dict(weights)
    if weights["all"] == 0.0:
        raise InputError(f"pose guidance {s:g} < 1 pulls the pose toward the \"all\" branch, but its "
                         f"guidance weight is 0 (so it is not computed); give \"all\" a weight or use "
                         f"pose guidance 1")
    # s * c + (1 - s) * e_all on the coefficients, i.e. on the weights (the base takes the rest).
    return {b: s * w + (1.0 - s) * (b == "all") for b, w in weights.items()}


def _json_dict(text: str) -> dict | None:
    """``text`` read as a JSON object, or None when it is not one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse_pose_guidance(text: str | None):
    """A command line's ``--pose-guidance``: a scale ("0.25") or a JSON dict of branch
    weights ('{"self": 0}'); None stays None (the default). Checked against the default
    expression guidance (``plan_guidance``), so a bad value fails before any work."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = _json_dict(text)
        if value is None:
            raise InputError(f"--pose-guidance must be a scale in [0, 1] (e.g. 0.25) or a JSON dict of branch "
                             f"weights (e.g. '{{\"self\": 0}}'), got {text!r}") from None
    plan_guidance(None, value)
    return value


def parse_guidance(text: str | None):
    """A command line's ``--guidance``: a JSON dict of branch weights merged over the
    paper's (e.g. '{"self": 1.5}'); None stays None (the paper's). Checked here."""
    if text is None:
        return None
    value = _json_dict(text)
    if value is None:
        raise InputError(f"--guidance must be a JSON dict of branch weights (branches {', '.join(BRANCHES[1:])}), "
                         f"e.g. '{{\"self\": 1.5}}', got {text!r}")
    plan_guidance(value, None)
    return value


def command_line_guidance(guidance_text: str | None, pose_text: str | None):
    """(guidance, pose_guidance) of a command line. Unlike the Python API, where weights
    given without ``pose_guidance`` guide the pose too, a command line keeps the default
    pose guidance (``DEFAULT_POSE_GUIDANCE``) unless ``--pose-guidance`` says otherwise."""
    guidance = parse_guidance(guidance_text)
    pose = parse_pose_guidance(pose_text)
    if guidance is not None and pose is None:
        pose = dict(DEFAULT_POSE_GUIDANCE)
    plan_guidance(guidance, pose)
    return guidance, pose


def plan_guidance(weights: dict[str, float] | None = None, pose_guidance=None) -> GuidancePlan:
    """The branches worth running for these weights (paper defaults when None).

    With all weights zero the model runs unconditioned ("none" only); with only
    ``all`` at weight 1 the base cancels and just "all" runs. ``pose_guidance``: a
    scale in [0, 1] or a dict of the pose channels' own weights (module docstring).
    None means ``DEFAULT_POSE_GUIDANCE`` with the default ``weights`` (None), and the
    pose guided like every other channel (scale 1) with weights of the caller's own,
    so that guidance given without ``pose_guidance`` means what it always did.
    """
    merged = _merge(DEFAULT_GUIDANCE, weights, "guidance")
    if pose_guidance is None:
        pose_guidance = 1.0 if weights else DEFAULT_POSE_GUIDANCE
    pose = pose_weights(merged, pose_guidance)
    names = [b for b in BRANCHES[1:] if merged[b] != 0.0 or pose[b] != 0.0]
    expression = tuple(merged[b] for b in names)
    per_pose = None if pose == merged else tuple(pose[b] for b in names)
    if names == ["all"] and merged["all"] == 1.0 and pose["all"] == 1.0:
        return GuidancePlan(("all",), (1.0,))
    return GuidancePlan(("none",) + tuple(names), (0.0,) + expression,
                        None if per_pose is None else (0.0,) + per_pose)
