"""Sizes and recipe constants of the DyStream generator, in one typed place.

Two presets: ``small`` (real time on a 2-core CPU) and ``paper`` (the published
size: transformer 768 x 12 x 12 heads, head 6 x 768, two 8-layer audio encoders).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace

from dystream.config import FRAMES_PER_SECOND, SAMPLE_RATE
from dystream.errors import InputError
from dystream.motion import MOTION_DIM, NAMES

# Branch names of classifier-free guidance, in the order the model batches them.
BRANCHES: tuple[str, ...] = ("none", "self", "other", "anchor", "all")
# Paper defaults: u + 0.5 (self - u) + 0.5 (other - u) + 1.0 (all - u).
DEFAULT_GUIDANCE: dict[str, float] = {"self": 0.5, "other": 0.5, "anchor": 0.0, "all": 1.0}
# The head pose channels' own guidance (generator/guidance.py): branch weights merged
# over the ones above, or a scale s in [0, 1] toward the "all" branch (1 = the paper:
# every channel guided alike). Default: no self-audio term on the pose (it walks the
# head away from the anchor over minutes), a partner-audio term (it drives the
# listening nods) and "all" at 0.75; the same 4 branches run. Applies where the
# guidance above is the default too (guidance of one's own guides the pose alike
# unless a pose guidance is given). The partner-audio weight (0.7) was chosen on the
# synthetic val split's listening nods with the bundled weights (docs/generator.md,
# "Pose guidance" and "Weight averages of continuations"); other weights may want
# another (stages 4 and 5 used 0.4).
DEFAULT_POSE_GUIDANCE: float | dict[str, float] = {"self": 0.0, "other": 0.7, "all": 0.75}
MAX_LOOKAHEAD_MS = 120
# Classes of the training-only phone probe (``phone_weight``): the 39 ARPAbet phones of
# the data engine's labels and silence ("pau"), in the order of
# dystream.training.dataset.PHONE_CLASSES.
PHONE_CLASS_COUNT = 40
# Classes of the training-only voice adversary (``voice_adversary_weight``): voices of the
# training data by sorted index, modulo this count.
VOICE_CLASS_COUNT = 64


@dataclass(frozen=True)
class GeneratorConfig:
    """Every size and recipe constant of the generator."""

    motion_dim: int = MOTION_DIM
    sample_rate: int = SAMPLE_RATE
    frames_per_second: int = FRAMES_PER_SECOND

    # Log-mel front end: 25 ms windows every 10 ms, 4 mel frames per motion frame.
    n_mels: int = 64
    mel_window: int = 400
    mel_hop: int = 160
    # Mel frames before a motion frame's own 4 that its front convolution sees.
    front_left_mels: int = 2
    # Audio lookahead per stream in milliseconds (multiples of the 10 ms mel hop).
    self_lookahead_ms: int = 60
    other_lookahead_ms: int = 60

    # Causal audio encoders (one per stream, same size). Trained weights can be grown to
    # more layers (``Generator.deepen_audio_encoders``: new blocks start as identities).
    audio_width: int = 256
    audio_layers: int = 4
    audio_kernel: int = 3

    # Causal transformer over frames.
    width: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.1
    window: int = 96  # sliding attention window W in frames (= training window)

    # Flow-matching head.
    head_width: int = 256
    head_blocks: int = 3
    sampler_steps: int = 5

    # Training recipe (DESIGN.md section 2).
    context_noise_prob: float = 0.5
    last_frames: int = 5
    last_frames_weight: float = 3.0
    audio_drop_prob: float = 0.1
    anchor_drop_prob: float = 0.1

    # Recipe options beyond the paper (docs/generator.md, "Deviations"); the defaults
    # here are the paper's recipe (and what weights saved before these options mean).
    # Head pose (pitch .. log_scale) modelled relative to the anchor's pose: the model
    # never sees an absolute pose, so it cannot settle on one learned from the voice.
    pose_relative: bool = False
    # Training-only speaker augmentation of the log-mel front end: the power spectrum's
    # frequency axis scaled by a factor in [1 - warp, 1 + warp] (a vocal-tract-length
    # change) and a smooth random equaliser of up to +/- eq_db.
    spec_warp: float = 0.0
    spec_eq_db: float = 0.0
    # Training-only random recording channel, drawn anew for every window and stream
    # (audio_frontend.ChannelAugmentation): spec_masks notches of -30 dB, each up to
    # spec_mask_width of the mel range (frequency masking), a band limit with probability
    # spec_band_prob (high pass 80-400 Hz, low pass 2.5-6 kHz) and a room's tail with
    # probability spec_reverb_prob (RT60 0.2-1 s), a random level of +/- spec_gain_db and,
    # with probability spec_noise_prob, a white noise floor spec_noise_snr (low, high) dB
    # under the window's mean power (speech and pauses). All 0: off.
    spec_masks: int = 0
    spec_mask_width: float = 0.15
    spec_band_prob: float = 0.0
    spec_reverb_prob: float = 0.0
    spec_gain_db: float = 0.0
    spec_noise_prob: float = 0.0
    spec_noise_snr: tuple = (5.0, 30.0)
    # Vocal-tract-length pooling in the front end (inference too): each mel frame is also
    # computed from the power spectrum with its frequency axis scaled by each of these
    # factors, the front projection runs on every version and the features keep the
    # element-wise maximum, so a voice whose formants sit higher or lower than the
    # training voices' (a shorter or longer vocal tract) meets the same detectors.
    # Empty: one unwarped spectrum (what weights saved before this option mean).
    front_warps: tuple = ()
    # How many of the audio encoder's conv blocks run on every warped version before the
    # maximum (0: the maximum right after the front projection). Deeper pooling lets
    # each version's detectors see a few frames of context first; the blocks' streaming
    # state then holds one history per version.
    front_pool_depth: int = 0
    # Causal running mean normalisation of the log-mel (inference too): every stream keeps
    # a power-weighted exponential running mean of its log-mel with this time constant in
    # seconds (speech counts, pauses and noise floors hardly do), and each frame's window
    # is shifted by (learned prior mean - running mean), so a speaker's long-term spectrum
    # and a recording channel's colouring (a band limit, an equaliser) are taken out before
    # the layers. Training windows bring mean_norm_context_seconds of earlier audio for
    # the statistics alone. 0: off (what weights saved before this option mean).
    mean_norm_seconds: float = 0.0
    mean_norm_context_seconds: float = 4.0
    # Weight of the prior mean in the running mean, in frames of speech at the front end's
    # reference level (a shrinkage toward the prior while little speech has been heard).
    mean_norm_prior_frames: float = 5.0
    # Training-only auxiliary target: a linear probe on c_t regresses the next
    # future_frames clean frames (weight future_weight), so c_t carries where the
    # motion is going (a nod under way), not only the next frame.
    future_frames: int = 0
    future_weight: float = 1.0
    # Training-only auxiliary target: a linear probe on the self audio encoder's features
    # classifies the phone at each frame (PHONE_CLASSES: ARPAbet + silence, from the
    # data's phone labels; frames without labels are skipped), cross-entropy with weight
    # phone_weight, so the encoder learns what is said rather than who says it.
    # 0: no probe (what weights saved before this option mean).
    phone_weight: float = 0.0
    # Training-only voice adversary: a linear classifier on the self audio encoder's
    # features guesses the speaking voice (one of VOICE_CLASS_COUNT; the training data's
    # voices, sorted) and its gradient reaches the encoder reversed and scaled by
    # voice_adversary_weight, so the encoder is pushed to drop who speaks and keep what is
    # said. 0: off.
    voice_adversary_weight: float = 0.0
    # Flow-head noise draws per frame in training (MAR): the transformer runs once,
    # the head sees head_draws (sigma, noise) pairs per condition.
    head_draws: int = 1
    # Per-channel weights of the flow-matching MSE, {channel name: weight} over the
    # names of dystream.motion (others weigh 1); the per-frame MSE is the weighted
    # mean over channels. E.g. {"mouthClose": 3} spends more of the loss on lip contact.
    loss_channel_weights: dict = field(default_factory=dict)

    guidance: dict = field(default_factory=lambda: dict(DEFAULT_GUIDANCE))

    def __post_init__(self) -> None:
        for name in ("self_lookahead_ms", "other_lookahead_ms"):
            ms = getattr(self, name)
            if not 0 <= ms <= MAX_LOOKAHEAD_MS or ms % self.mel_hop_ms:
                raise InputError(
                    f"{name}={ms}: lookahead must be 0-{MAX_LOOKAHEAD_MS} ms in steps of "
                    f"{self.mel_hop_ms} ms (the mel hop)"
                )
        if self.samples_per_frame % self.mel_hop:
            raise InputError("mel_hop must divide the samples of one motion frame")
        if not 0.0 <= self.spec_warp < 0.5 or self.spec_eq_db < 0.0:
            raise InputError("spec_warp must be in [0, 0.5) and spec_eq_db >= 0")
        if (self.spec_masks < 0 or not 0.0 < self.spec_mask_width <= 1.0
                or not 0.0 <= self.spec_band_prob <= 1.0 or not 0.0 <= self.spec_reverb_prob <= 1.0):
            raise InputError("spec_masks must be >= 0, spec_mask_width in (0, 1], "
                             "spec_band_prob and spec_reverb_prob in [0, 1]")
        try:
            object.__setattr__(self, "spec_noise_snr", tuple(float(x) for x in self.spec_noise_snr))
        except (TypeError, ValueError):
            raise InputError(f"spec_noise_snr must be a pair (low, high) of dB, got {self.spec_noise_snr!r}") from None
        if (not 0.0 <= self.spec_gain_db <= 40.0 or not 0.0 <= self.spec_noise_prob <= 1.0
                or len(self.spec_noise_snr) != 2 or not -20.0 <= self.spec_noise_snr[0] <= self.spec_noise_snr[1]):
            raise InputError("spec_gain_db must be in [0, 40], spec_noise_prob in [0, 1] and spec_noise_snr "
                             f"a pair (low, high) of dB with -20 <= low <= high, got {self.spec_gain_db}, "
                             f"{self.spec_noise_prob}, {list(self.spec_noise_snr)}")
        object.__setattr__(self, "front_warps", tuple(float(f) for f in self.front_warps))
        if any(not 0.5 <= f <= 2.0 for f in self.front_warps):
            raise InputError(f"front_warps: every factor must be in [0.5, 2], got {list(self.front_warps)}")
        if not 0 <= self.front_pool_depth <= self.audio_layers or (self.front_pool_depth and not self.front_warps):
            raise InputError(f"front_pool_depth={self.front_pool_depth}: must be 0-{self.audio_layers} "
                             "(the audio encoder's blocks), and needs front_warps")
        if not 0.0 <= self.mean_norm_seconds <= 60.0 or not 0.0 <= self.mean_norm_context_seconds <= 60.0 \
                or self.mean_norm_prior_frames <= 0.0:
            raise InputError("mean_norm_seconds and mean_norm_context_seconds must be in [0, 60] and "
                             f"mean_norm_prior_frames > 0, got {self.mean_norm_seconds}, "
                             f"{self.mean_norm_context_seconds}, {self.mean_norm_prior_frames}")
        if self.phone_weight < 0 or self.voice_adversary_weight < 0:
            raise InputError("phone_weight and voice_adversary_weight must be >= 0")
        if self.future_frames < 0 or self.head_draws < 1:
            raise InputError("future_frames must be >= 0 and head_draws >= 1")
        unknown = sorted(set(self.loss_channel_weights) - set(NAMES))
        if unknown:
            raise InputError(f"loss_channel_weights: unknown channels {', '.join(unknown)}; "
                             f"channels are {', '.join(NAMES)}")
        if any(not isinstance(w, (int, float)) or w < 0 for w in self.loss_channel_weights.values()):
            raise InputError("loss_channel_weights: every weight must be a number >= 0")
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

    def lookahead_mels(self, stream: int) -> int:
        ms = self.self_lookahead_ms if stream == 0 else self.other_lookahead_ms
        return ms // self.mel_hop_ms

    def lookahead_samples(self, stream: int) -> int:
        return self.lookahead_mels(stream) * self.mel_hop

    @property
    def front_left_samples(self) -> int:
        """Samples before frame 0 that the first mel frames of frame 0 read."""
        return (self.mel_window - self.mel_hop) + self.front_left_mels * self.mel_hop

    @property
    def mean_norm_context_frames(self) -> int:
        """Frames of audio before a training window's encoder context that only feed the
        running mean of ``mean_norm_seconds`` (0 when it is off)."""
        if not self.mean_norm_seconds:
            return 0
        return int(round(self.mean_norm_context_seconds * self.frames_per_second))

    @property
    def encoder_context_frames(self) -> int:
        """Frames of history the causal convolutions of an audio encoder see."""
        return self.audio_layers * (self.audio_kernel - 1)

    # -- (de)serialisation -------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GeneratorConfig":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_lookahead(self, self_ms: int | None = None, other_ms: int | None = None) -> "GeneratorConfig":
        return replace(
            self,
            self_lookahead_ms=self.self_lookahead_ms if self_ms is None else self_ms,
            other_lookahead_ms=self.other_lookahead_ms if other_ms is None else other_ms,
        )


# Frequency scalings of the pooled front end (``front_warps``): 0.7 .. 1.43, steps of ~9%.
VTL_POOL = (0.7, 0.765, 0.837, 0.915, 1.0, 1.093, 1.195, 1.307, 1.429)

PRESETS: dict[str, GeneratorConfig] = {
    # Sized by measurement (`dystream bench generator`) to stay under 10 ms per frame
    # on one core of a shared 2-core CPU: the per-frame cost is weight traffic of
    # batch-1 matmuls, so the MLPs are narrow (ratio 2) and the head, run 5 steps x
    # 4 branches, is 128 wide.
    # Recipe: pose relative to the anchor and the future-frame probe (weight 0.05), and
    # vocal-tract-length pooling over 9 frequency scalings from 0.7 to 1.43, each chosen
    # by side-by-side comparisons on the validation split (docs/generator.md).
    "small": GeneratorConfig(audio_width=128, width=256, layers=4, heads=4, mlp_ratio=2,
                             head_width=128, head_blocks=3,
                             pose_relative=True, future_frames=8, future_weight=0.05,
                             front_warps=VTL_POOL),
    "paper": GeneratorConfig(
        n_mels=80, audio_width=768, audio_layers=8, width=768, layers=12, heads=12, mlp_ratio=4,
        head_width=768, head_blocks=6,
    ),
}


def preset(name: str, **overrides) -> GeneratorConfig:
    """A named size preset ("small" or "paper"), optionally with fields replaced."""
    if name not in PRESETS:
        raise InputError(f"unknown generator preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
