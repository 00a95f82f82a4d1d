"""The generator's architecture, in one typed place: what the weights carry.

Sizes only: how the network is trained (dropout, condition dropout, noisy context,
auxiliary heads) is the training recipe, :mod:`dystream.training.recipe`; how it is
sampled (steps, guidance) is :class:`dystream.generator.sampling.Sampling`.

Two presets (``dystream bench generator`` prints their parameter counts):

* ``small`` — the bundled model (``dystream/weights/generator-small.safetensors``):
  real time on one core of a 2-core CPU.
* ``large`` — the published DyStream's width and depth (transformer 768 x 12 layers x
  12 heads, flow head 6 x 768) built from this project's blocks; it is not the
  authors' network (docs/generator.md, "Presets", says how it differs).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

from dystream.config import MEDIA, OTHER, SELF
from dystream.errors import InputError
from dystream.motion import MOTION_DIM

MAX_LOOKAHEAD_MS = 120
# Frequency scalings of the front end's vocal-tract-length pooling (``front_warps``):
# 0.7 .. 1.43 in steps of ~9%.
VTL_POOL = (0.7, 0.765, 0.837, 0.915, 1.0, 1.093, 1.195, 1.307, 1.429)


@dataclass(frozen=True)
class GeneratorConfig:
    """Every size of the generator network; saved with its weights."""

    motion_dim: int = MOTION_DIM
    sample_rate: int = MEDIA.sample_rate
    frames_per_second: int = MEDIA.frames_per_second

    # Log-mel front end: 25 ms windows every 10 ms, 4 mel frames per motion frame.
    n_mels: int = 64
    mel_window: int = 400
    mel_hop: int = 160
    # Mel frames before a motion frame's own 4 that its front projection sees.
    front_left_mels: int = 2
    # Vocal-tract-length pooling: every mel frame is also computed from the power spectrum
    # with its frequency axis scaled by each factor, the front projection runs on every
    # version and the features keep the element-wise maximum, so a voice whose formants sit
    # higher or lower than the training voices' meets the same detectors. Empty: off.
    front_warps: tuple = ()
    # Audio lookahead per stream in milliseconds (multiples of the 10 ms mel hop).
    self_lookahead_ms: int = 60
    other_lookahead_ms: int = 60

    # Causal audio encoders (one per stream, same size).
    audio_width: int = 256
    audio_layers: int = 4
    audio_kernel: int = 3

    # Causal transformer over frames.
    width: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    window: int = 96  # sliding attention window W in frames (= training window)

    # Flow-matching head.
    head_width: int = 256
    head_blocks: int = 3

    # Head pose (pitch .. log_scale) modelled relative to the anchor's pose: the model never
    # sees an absolute pose, so it cannot settle on one learned from the voice.
    pose_relative: bool = False

    def __post_init__(self) -> None:
        for name in ("self_lookahead_ms", "other_lookahead_ms"):
            ms = getattr(self, name)
            if not 0 <= ms <= MAX_LOOKAHEAD_MS or ms % self.mel_hop_ms:
                raise InputError(
                    f"{name}={ms}: lookahead must be 0-{MAX_LOOKAHEAD_MS} ms in steps of "
                    f"{self.mel_hop_ms} ms (the mel hop)"
                )
        if self.sample_rate % self.frames_per_second or self.samples_per_frame % self.mel_hop:
            raise InputError("mel_hop must divide the samples of one motion frame")
        object.__setattr__(self, "front_warps", tuple(float(f) for f in self.front_warps))
        if any(not 0.5 <= f <= 2.0 for f in self.front_warps):
            raise InputError(f"front_warps: every factor must be in [0.5, 2], got {list(self.front_warps)}")
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise InputError("width must split into heads of even size (rotary pairs)")

    # -- derived sizes ----------------------------------------------------
    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.frames_per_second

    @property
    def mel_hop_ms(self) -> int:
        return 1000 * self.mel_hop // self.sample_rate

    @property
    def mels_per_frame(self) -> int:
        return self.samples_per_frame // self.mel_hop

    def lookahead_ms(self, stream: int) -> int:
        if stream not in (SELF, OTHER):
            raise ValueError(f"stream must be {SELF} (self) or {OTHER} (other), got {stream!r}")
        return self.self_lookahead_ms if stream == SELF else self.other_lookahead_ms

    def lookahead_mels(self, stream: int) -> int:
        return self.lookahead_ms(stream) // self.mel_hop_ms

    def lookahead_samples(self, stream: int) -> int:
        return self.lookahead_mels(stream) * self.mel_hop

    @property
    def front_left_samples(self) -> int:
        """Samples before frame 0 that the first mel frames of frame 0 read."""
        return (self.mel_window - self.mel_hop) + self.front_left_mels * self.mel_hop

    @property
    def encoder_context_frames(self) -> int:
        """Frames of history the causal convolutions of an audio encoder see."""
        return self.audio_layers * (self.audio_kernel - 1)

    # -- (de)serialisation -------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GeneratorConfig":
        """A config saved by ``to_json``; configs of weights saved before the architecture
        and the training recipe were separated are migrated (``migrate_config``)."""
        return cls(**migrate_config(json.loads(text)))

    def with_lookahead(self, self_ms: int | None = None, other_ms: int | None = None) -> "GeneratorConfig":
        return replace(
            self,
            self_lookahead_ms=self.self_lookahead_ms if self_ms is None else self_ms,
            other_lookahead_ms=self.other_lookahead_ms if other_ms is None else other_ms,
        )


# Fields that configs saved before dystream 0.2 carried beside the architecture: the
# training recipe (now dystream.training.recipe), sampling defaults that were never read,
# and experiment options that no shipped model used. The experiments' results are in
# lab/LOG.md. Options here that change what the network computes, if on, cannot be run.
_RECIPE_FIELDS = frozenset({
    "dropout", "context_noise_prob", "last_frames", "last_frames_weight", "audio_drop_prob",
    "anchor_drop_prob", "future_frames", "future_weight", "phone_weight", "voice_adversary_weight",
    "head_draws", "loss_channel_weights", "spec_warp", "spec_eq_db", "spec_masks", "spec_mask_width",
    "spec_band_prob", "spec_reverb_prob", "spec_gain_db", "spec_noise_prob", "spec_noise_snr",
    "sampler_steps", "guidance", "mean_norm_context_seconds", "mean_norm_prior_frames",
})
_REMOVED_INFERENCE_OPTIONS = {"mean_norm_seconds": 0.0, "front_pool_depth": 0}


def migrate_config(data: dict) -> dict:
    """The architecture fields of a saved config (any version), checked.

    Recipe and sampling fields of old files are dropped; a file whose network used an
    option that has since been removed (it was on in no shipped model) is refused with
    a clear error rather than run as a different function."""
    known = {f.name for f in fields(GeneratorConfig)}
    for name, off in _REMOVED_INFERENCE_OPTIONS.items():
        if name in data and data[name] != off:
            raise InputError(f"these weights use {name}={data[name]}, an experimental option that dystream "
                             "no longer implements (lab/LOG.md records its result); run them with dystream "
                             "0.1, or retrain")
    unknown = set(data) - known - _RECIPE_FIELDS - set(_REMOVED_INFERENCE_OPTIONS)
    if unknown:
        raise InputError(f"unknown generator config fields {sorted(unknown)}: written by a newer dystream?")
    return {k: v for k, v in data.items() if k in known}


PRESETS: dict[str, GeneratorConfig] = {
    # Sized by measurement (`dystream bench generator`) to stay under 10 ms per frame on one
    # core of a shared 2-core CPU: the per-frame cost is weight traffic of batch-1 matmuls,
    # so the MLPs are narrow (ratio 2) and the head, run 5 steps x 4 branches, is 128 wide.
    # Pose relative to the anchor, vocal-tract-length pooling, an 80 ms self lookahead and
    # 8-block audio encoders were each chosen by side-by-side runs (lab/LOG.md).
    "small": GeneratorConfig(audio_width=128, audio_layers=8, width=256, layers=4, heads=4, mlp_ratio=2,
                             head_width=128, head_blocks=3, self_lookahead_ms=80, other_lookahead_ms=60,
                             pose_relative=True, front_warps=VTL_POOL),
    # The published model's transformer and head sizes, with the small preset's front end,
    # lookahead and pose modelling.
    "large": GeneratorConfig(n_mels=80, audio_width=768, audio_layers=8, width=768, layers=12, heads=12,
                             mlp_ratio=4, head_width=768, head_blocks=6, self_lookahead_ms=80,
                             other_lookahead_ms=60, pose_relative=True, front_warps=VTL_POOL),
}


def preset(name: str, **overrides) -> GeneratorConfig:
    """A named preset ("small" or "large"), optionally with fields replaced."""
    if name not in PRESETS:
        raise InputError(f"unknown generator preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
