"""Frame-by-frame sampling shared by offline generation and streaming sessions.

``Rollout`` owns everything that advances one frame: the transformer's ring KV
cache for each guidance branch, the previous motion frame, the sampler's noise
levels and the flow-time terms (computed once, not per frame). Offline
generation runs the audio encoders over the whole clip in one call and then
rolls out; a streaming session runs the encoders incrementally and rolls out the
same way, so both produce the same motion for the same audio and seed.
"""

from __future__ import annotations

import numpy as np
import torch

from dystream.errors import InputError
from dystream.generator.flow_head import euler_sample, sigma_schedule
from dystream.generator.guidance import frame_noise, plan_guidance
from dystream.generator.model import Generator


class Rollout:
    """Autoregressive sampling of one stream, one frame per ``step``.

    All guidance branches run as one batch; the noise of frame t depends only on
    (seed, t). Call inside ``torch.inference_mode()``.
    """

    def __init__(self, model: Generator, anchor, *, steps: int = 5, seed: int = 0, guidance=None) -> None:
        if steps < 1:
            raise InputError(f"steps must be >= 1, got {steps}")
        self.model, self.seed, self.steps = model, int(seed), int(steps)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.plan = plan_guidance(guidance)
        self.keep_self, self.keep_other, self.keep_anchor = self.plan.keep_masks(self.device)
        self.weights = self.plan.weight_tensor(self.device, self.dtype)
        anchor = torch.as_tensor(np.asarray(anchor, dtype=np.float32), device=self.device).to(self.dtype)
        if anchor.shape != (model.cfg.motion_dim,):
            raise InputError(f"anchor must have {model.cfg.motion_dim} values, got {tuple(anchor.shape)}")
        self.anchor = model.normalise(anchor)
        self.sigmas = sigma_schedule(self.steps, self.device, self.dtype)
        # Flow-time terms depend only on the step index: computed once per rollout.
        self.time_emb, time_mod = model.head.time_terms(self.sigmas[:-1])
        self.time_mod = [[tuple(t[i] for t in block) for block in time_mod] for i in range(self.steps)]
        self.reset()

    def reset(self) -> None:
        n = self.plan.size
        tokens = self.model.anchor_token(self.anchor.expand(n, -1), self.keep_anchor)
        self.cache = self.model.transformer.new_cache(tokens)
        # Before the first frame the face is at its anchor pose.
        self.previous = self.anchor.view(1, 1, -1)
        self.frame = 0

    def step(self, self_features: torch.Tensor, other_features: torch.Tensor) -> torch.Tensor:
        """Features [1, H] of frame t for each stream -> motion [D] (raw units) of frame t."""
        model, n = self.model, self.plan.size
        self_b = model.drop_audio(self_features.expand(n, -1), self.keep_self, model.null_self)
        other_b = model.drop_audio(other_features.expand(n, -1), self.keep_other, model.null_other)
        fused = model.transformer.fuse_audio(self_b, other_b)[:, None]
        condition = model.transformer.step(self.previous.expand(n, 1, -1), fused, self.cache)[:, 0]
        cond, cond_mod = model.head.condition(condition)
        # Output modulation for every step at once: [steps, n, width] each.
        out_shift, out_scale = model.head.output_terms(cond[None], self.time_emb[:, None])
        noise = frame_noise(self.seed, torch.tensor([self.frame], device=self.device),
                            model.cfg.motion_dim).to(self.device, self.dtype)

        def denoise(x: torch.Tensor, i: int) -> torch.Tensor:
            x0 = model.head.denoise(x.expand(n, -1), cond_mod, self.time_mod[i], (out_shift[i], out_scale[i]))
            return self.plan.combine(x0, self.weights).view(1, -1)

        sample = euler_sample(denoise, noise, self.sigmas)  # [1, D] normalised
        self.previous = sample[:, None]
        self.frame += 1
        return model.denormalise(sample[0])


def _as_audio(audio, name: str) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise InputError(f"{name} must be mono [samples], got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise InputError(f"{name} contains NaN or infinite samples")
    return audio


def encode_clip(model: Generator, self_audio: np.ndarray, other_audio: np.ndarray, num_frames: int, device):
    """Both streams' features [1, T, H] for a clip, in one call per encoder.

    Silence is assumed before the clip (zeros) and after it (the lookahead of the last frames).
    """
    cfg = model.cfg
    out = []
    for encoder, audio in ((model.self_encoder, self_audio), (model.other_encoder, other_audio)):
        need = encoder.samples_needed(num_frames)
        buffer = np.zeros(need, dtype=np.float32)
        usable = min(len(audio), need - cfg.front_left_samples)
        buffer[cfg.front_left_samples: cfg.front_left_samples + usable] = audio[:usable]
        tensor = torch.from_numpy(buffer)[None].to(device)
        out.append(encoder(tensor, num_frames))
    return out


def generate_motion(model: Generator, self_audio, other_audio, anchor, *, steps: int = 5, seed: int = 0,
                    guidance=None, device="cpu") -> np.ndarray:
    """Motion [T, D] for a whole clip, T = len(self_audio) // 640.

    ``other_audio`` None means a silent partner; a shorter partner track is padded
    with silence, a longer one cut to the self track.
    """
    cfg = model.cfg
    self_audio = _as_audio(self_audio, "self audio")
    num_frames = len(self_audio) // cfg.samples_per_frame
    if num_frames == 0:
        raise InputError(
            f"self audio is too short: {len(self_audio)} samples, at least {cfg.samples_per_frame} "
            f"(one {1000 // cfg.frames_per_second} ms frame) needed"
        )
    other_audio = np.zeros(0, np.float32) if other_audio is None else _as_audio(other_audio, "other audio")
    was_training, threads = model.training, torch.get_num_threads()
    model.to(device).eval()
    try:
        with torch.inference_mode():
            self_features, other_features = encode_clip(model, self_audio, other_audio, num_frames, device)
            if torch.device(device).type == "cpu":
                # Batch-1 frame steps are small matmuls: handing them to a second thread costs
                # more than it saves (measured: several times slower on a busy 2-core CPU).
                torch.set_num_threads(1)
            rollout = Rollout(model, anchor, steps=steps, seed=seed, guidance=guidance)
            frames = [rollout.step(self_features[:, t], other_features[:, t]) for t in range(num_frames)]
            return torch.stack(frames).float().cpu().numpy()
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
