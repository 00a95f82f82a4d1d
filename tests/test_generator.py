from dataclasses import replace

import numpy as np
import pytest
import torch

from dystream.errors import DystreamError, InputError
from dystream.generator.audio_encoder import RunningMean, causal_ema
from dystream.generator.config import GeneratorConfig, preset
from dystream.generator.guidance import frame_noise, plan_guidance
from dystream.generator.inference import generate_motion
from dystream.generator.model import Generator
from dystream.generator.weights import load_generator, read_metadata, save_weights
from dystream.motion import MOTION_DIM
from dystream.streaming import StreamingSession

from generator_helpers import single_thread  # noqa: F401  (autouse fixture)
from generator_helpers import anchor_frame, speech_like, tiny_generator


def _batch(model, batch=2, frames=12, seed=0):
    left, right = model.audio_context()
    g = torch.Generator().manual_seed(seed)
    n = left + frames * 640 + right
    audio = lambda: 0.1 * torch.randn(batch, n, generator=g)
    motion = 0.1 * torch.randn(batch, frames, MOTION_DIM, generator=g)
    keep = torch.arange(batch) % 2 == 0  # one sample without anchor: the null anchor is used too
    return audio(), audio(), motion, motion[:, -1], keep


def test_presets_and_parameter_counts():
    cfg = preset("small")
    small = Generator(cfg).parameter_counts()
    assert 1e6 < small["total"] < 20e6
    nulls = 2 * cfg.audio_width + cfg.width  # null self / other audio, null anchor
    assert small["total"] == small["audio encoders"] + small["transformer"] + small["flow head"] + nulls
    paper = preset("paper")
    assert (paper.width, paper.layers, paper.heads, paper.head_blocks, paper.audio_layers) == (768, 12, 12, 6, 8)


def test_bad_lookahead_is_a_clear_error():
    with pytest.raises(InputError, match="lookahead"):
        GeneratorConfig(self_lookahead_ms=130)
    with pytest.raises(InputError, match="10 ms"):
        GeneratorConfig(other_lookahead_ms=45)


def test_audio_context_matches_what_the_encoders_read():
    model = tiny_generator(self_lookahead_ms=60, other_lookahead_ms=20)
    left, right = model.audio_context()
    assert right == 60 * 16
    cfg = model.cfg
    assert left == cfg.front_left_samples + cfg.encoder_context_frames * 640
    assert model.self_encoder.samples_needed(5) == cfg.front_left_samples + 5 * 640 + 960


@pytest.mark.parametrize("options", [{"pose_relative": False, "future_frames": 0}, {"pose_relative": True, "spec_warp": 0.15, "spec_eq_db": 6.0,
                                           "spec_masks": 2, "spec_band_prob": 0.5, "spec_reverb_prob": 0.5,
                                           "future_frames": 4, "head_draws": 3, "front_warps": (0.85, 1.0, 1.2),
                                           "front_pool_depth": 1, "mean_norm_seconds": 1.0,
                                           "mean_norm_context_seconds": 0.4}])
def test_training_loss_is_finite_reaches_every_parameter_and_checks_shapes(options):
    model = tiny_generator(**options).train()
    # 8 windows x 11 frames per stream: the per-frame audio dropout (p=0.1) drops some
    # frame of each stream for certain in practice (P(none) = 0.9^88 ~ 1e-4).
    loss, stats = model.training_loss(*_batch(model, batch=8), generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and loss.dim() == 0
    assert set(stats) >= {"loss", "mse", "mse_last"} and all(isinstance(v, float) for v in stats.values())
    if options["future_frames"]:
        assert "future_mse" in stats and np.isfinite(stats["future_mse"]) and stats["future_mse"] > 0
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert no_grad == []
    self_audio, other_audio, motion, anchor, keep = _batch(model)
    with pytest.raises(ValueError, match="self_audio must be"):
        model.training_loss(self_audio[:, :-1], other_audio, motion, anchor, keep)


def test_loss_channel_weights_reweight_the_mse_and_are_checked():
    """Weights all 1 give the plain MSE bit for bit; a weighted channel moves the loss
    by exactly the weighted mean of the per-channel errors; bad names are refused."""
    from dystream.errors import InputError
    from dystream.motion import NAMES

    plain = tiny_generator().train()
    ones = tiny_generator(loss_channel_weights={"jawOpen": 1.0}).train()
    heavy = tiny_generator(loss_channel_weights={"mouthClose": 4.0}).train()
    batch = _batch(plain)
    a, _ = plain.training_loss(*batch, generator=torch.Generator().manual_seed(2))
    b, _ = ones.training_loss(*batch, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    expected_weights = torch.ones(len(NAMES))
    expected_weights[NAMES.index("mouthClose")] = 4.0
    assert torch.allclose(heavy.loss_channel_weights, expected_weights / expected_weights.mean())
    c, _ = heavy.training_loss(*batch, generator=torch.Generator().manual_seed(2))
    assert torch.isfinite(c) and not torch.equal(a, c)
    assert "loss_channel_weights" not in heavy.state_dict()  # config, rebuilt on load
    with pytest.raises(InputError, match="unknown channels mouthShut"):
        tiny_generator(loss_channel_weights={"mouthShut": 2.0})
    with pytest.raises(InputError, match=">= 0"):
        tiny_generator(loss_channel_weights={"mouthClose": -1.0})


def test_training_loss_is_reproducible_with_a_generator():
    model = tiny_generator().train()
    batch = _batch(model)
    a, _ = model.training_loss(*batch, generator=torch.Generator().manual_seed(5))
    b, _ = model.training_loss(*batch, generator=torch.Generator().manual_seed(5))
    model.eval()  # dropout is 0 in the tiny model, so train/eval differ only by nothing random
    assert torch.equal(a, b)


def test_a_few_steps_fit_a_fixed_batch():
    model = tiny_generator().train()
    batch = _batch(model, batch=4, frames=10)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for step in range(40):
        loss, _ = model.training_loss(*batch, generator=torch.Generator().manual_seed(step % 4))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-4:]) < 0.6 * np.mean(losses[:4])


def test_kv_cache_equals_recompute_beyond_the_window():
    model = tiny_generator(window=8)
    tf = model.transformer
    frames = 30  # the ring wraps more than three times
    g = torch.Generator().manual_seed(0)
    prev = torch.randn(2, frames, MOTION_DIM, generator=g)
    fused = torch.randn(2, frames, model.cfg.width, generator=g)
    anchor = model.anchor_token(torch.randn(2, MOTION_DIM, generator=g), torch.tensor([True, False]))
    with torch.inference_mode():
        full = tf(prev, fused, anchor)
        cache = tf.new_cache(anchor)
        stepped = torch.cat([tf.step(prev[:, t:t + 1], fused[:, t:t + 1], cache) for t in range(frames)], 1)
    assert (full - stepped).abs().max().item() < 1e-5
    # Each layer looks back W-1 frames, so a frame's influence ends layers * (W-1) frames later.
    prev2 = prev.clone()
    prev2[:, 3] += 1.0
    with torch.inference_mode():
        full2 = tf(prev2, fused, anchor)
    reach = 3 + model.cfg.layers * (model.cfg.window - 1)
    assert torch.equal(full2[:, reach + 1:], full[:, reach + 1:])
    assert not torch.allclose(full2[:, reach], full[:, reach])


@pytest.mark.parametrize("lookahead_ms, options", [(0, {}), (60, {}), (120, {}), (80, {"mean_norm_seconds": 1.0})])
def test_audio_beyond_the_lookahead_never_changes_earlier_frames(lookahead_ms, options):
    model = tiny_generator(self_lookahead_ms=lookahead_ms, other_lookahead_ms=lookahead_ms, **options)
    frames = 20
    self_audio, other_audio = speech_like(frames * 640, 1), speech_like(frames * 640, 2)
    anchor = anchor_frame()
    base = generate_motion(model, self_audio, other_audio, anchor, seed=1, steps=3)
    change_at = 12 * 640 + 17
    for stream in (0, 1):
        changed = [self_audio.copy(), other_audio.copy()]
        changed[stream][change_at:] = speech_like(frames * 640 - change_at, 9)
        out = generate_motion(model, *changed, anchor, seed=1, steps=3)
        # Frame f reads audio up to 640 (f + 1) + lookahead samples.
        last_safe = (change_at - lookahead_ms * 16) // 640 - 1
        assert np.array_equal(out[: last_safe + 1], base[: last_safe + 1])
        assert not np.allclose(out[last_safe + 1], base[last_safe + 1])


def _assert_same_motion(grown: Generator, trained: Generator, frames: int = 20):
    """Offline motion of a model grown from trained weights equals the trained model's (1e-5);
    returns the trained model's motion and the audio (self, other)."""
    audio = speech_like(frames * 640, 3), speech_like(frames * 640, 4)
    expected = generate_motion(trained, *audio, anchor_frame(), seed=2, steps=3)
    np.testing.assert_allclose(generate_motion(grown, *audio, anchor_frame(), seed=2, steps=3), expected, atol=1e-5)
    return expected, audio


@pytest.mark.parametrize("warps", [(), (0.9, 1.0, 1.1)])
def test_a_longer_lookahead_grown_from_trained_weights_starts_as_the_same_function(warps):
    short = tiny_generator(self_lookahead_ms=40, other_lookahead_ms=20, front_warps=warps)
    long = Generator(short.cfg.with_lookahead(80, 60)).eval()
    assert long.self_encoder.front.weight.shape[1] > short.self_encoder.front.weight.shape[1]
    long.load_state_dict(long.widen_lookahead(short.state_dict()))
    _assert_same_motion(long, short)
    # The new lookahead frames have weights (zero, trainable): 4 more mel frames on self.
    grown = long.self_encoder.front.weight.unflatten(1, (long.cfg.n_mels, -1))
    assert grown.shape[2] == short.self_encoder.front_kernel + 4 and not grown[:, :, -4:].any()
    with pytest.raises(ValueError, match="not shrink"):
        short.widen_lookahead(long.state_dict())


@pytest.mark.parametrize("warps", [(), (0.8, 1.0, 1.25)])
def test_deeper_audio_encoders_grown_from_trained_weights_start_as_the_same_function(warps):
    shallow = tiny_generator(front_warps=warps)
    deep = Generator(replace(shallow.cfg, audio_layers=shallow.cfg.audio_layers + 2)).eval()
    deep.load_state_dict(deep.deepen_audio_encoders(shallow.state_dict()))
    a, (self_audio, other_audio) = _assert_same_motion(deep, shallow)
    # Streaming too: the grown encoder's step path equals the file's offline motion.
    session = StreamingSession(deep, anchor_frame(), seed=2, steps=3)
    streamed = [f.motion for f in session.feed("other", other_audio) + session.feed("self", self_audio)]
    np.testing.assert_allclose(np.stack(streamed), a[:len(streamed)], atol=1e-5)
    # The trained blocks are the file's; the new ones are trainable, with a zero output layer.
    for i, block in enumerate(deep.self_encoder.blocks):
        if i < shallow.cfg.audio_layers:
            torch.testing.assert_close(block.mlp[2].weight, shallow.self_encoder.blocks[i].mlp[2].weight)
        else:
            assert not block.mlp[2].weight.any() and not block.mlp[2].bias.any() and block.mlp[0].weight.any()
    with pytest.raises(ValueError, match="does not remove blocks"):
        shallow.deepen_audio_encoders(deep.state_dict())


def test_guidance_plan_skips_zero_weights_and_combines_on_x0():
    default = plan_guidance()
    assert default.branches == ("none", "self", "other", "all")
    assert plan_guidance({"self": 0, "other": 0}).branches == ("all",)
    assert plan_guidance({"self": 0, "other": 0, "all": 0}).branches == ("none",)
    with pytest.raises(InputError):
        plan_guidance({"audio": 1.0})
    x0 = torch.tensor([[1.0], [2.0], [4.0], [8.0]])  # none, self, other, all
    shared = plan_guidance(pose_guidance=1.0)  # every channel guided alike (tests/test_generator_guidance.py)
    guided = shared.combine(x0, shared.weight_tensor())
    assert guided.item() == pytest.approx(1 + 0.5 * 1 + 0.5 * 3 + 1.0 * 7)


def test_frame_noise_depends_only_on_seed_and_frame():
    a = frame_noise(7, torch.arange(0, 100), MOTION_DIM)
    b = frame_noise(7, torch.tensor([42, 3]), MOTION_DIM)
    assert torch.equal(a[42], b[0]) and torch.equal(a[3], b[1])
    assert not torch.equal(frame_noise(8, torch.tensor([42]), MOTION_DIM)[0], a[42])
    many = frame_noise(0, torch.arange(4000), MOTION_DIM)
    assert abs(many.mean().item()) < 0.02 and abs(many.std().item() - 1) < 0.02
    assert abs(torch.corrcoef(torch.stack([many[:-1].flatten(), many[1:].flatten()]))[0, 1].item()) < 0.02


def test_generate_motion_shapes_seed_and_bad_input():
    model = tiny_generator()
    audio = speech_like(16000, 3)
    out = generate_motion(model, audio, None, anchor_frame(), seed=0)
    assert out.shape == (25, MOTION_DIM) and np.all(np.isfinite(out))
    again = generate_motion(model, audio, np.zeros(5, np.float32), anchor_frame(), seed=0)
    assert np.array_equal(out, again)  # a silent partner, padded, is the same as none
    assert not np.allclose(out, generate_motion(model, audio, None, anchor_frame(), seed=1))
    with pytest.raises(InputError, match="too short"):
        generate_motion(model, np.zeros(100, np.float32), None, anchor_frame())
    with pytest.raises(InputError, match="anchor"):
        generate_motion(model, audio, None, np.zeros(3, np.float32))


@pytest.mark.parametrize("options", [{}, {"front_warps": (0.8, 1.0, 1.25)},
                                     {"front_warps": (0.8, 1.0, 1.25), "front_pool_depth": 2},
                                     {"mean_norm_seconds": 2.0}])
def test_weights_round_trip(tmp_path, options):
    model = tiny_generator(self_lookahead_ms=40, **options)
    path = save_weights(model, tmp_path / "g.safetensors", {"steps": 12})
    loaded = load_generator(path)
    assert loaded.cfg == model.cfg and loaded.weights_info == {"steps": 12}
    assert "config" in read_metadata(path)
    # Loaded for CPU inference: float64 audio encoders, float32 elsewhere.
    assert loaded.self_encoder.compute_dtype == loaded.other_encoder.compute_dtype == torch.float64
    assert loaded.dtype == loaded.transformer.blocks[0].qkv.weight.dtype == loaded.head.out.weight.dtype == torch.float32
    # Loaded as training holds it: float32 throughout.
    assert load_generator(path, inference=False).self_encoder.compute_dtype == torch.float32
    audio = speech_like(8000, 4)
    assert np.array_equal(generate_motion(model, audio, None, anchor_frame()),
                          generate_motion(loaded.set_encoder_dtype(torch.float32), audio, None, anchor_frame()))
    with pytest.raises(DystreamError, match="not found"):
        load_generator(tmp_path / "missing.safetensors")


def test_every_parameter_is_in_the_graph_even_when_nothing_is_dropped():
    """DDP fails on parameters without gradient: null embeddings must join every step."""
    model = tiny_generator(anchor_drop_prob=0.0, audio_drop_prob=0.0).train()
    self_audio, other_audio, motion, anchor, _ = _batch(model)
    loss, _ = model.training_loss(self_audio, other_audio, motion, anchor, torch.ones(2, dtype=torch.bool))
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_a_pose_relative_model_moves_its_pose_with_the_anchor_and_nothing_else():
    """Pose is modelled relative to the anchor: shifting the anchor's head pose shifts every
    generated frame's pose by the same amount and leaves the expression exactly as it was;
    the paper's absolute model has no such property."""
    from dystream.motion import POSE_SLICE

    audio, other = speech_like(16000, 1), speech_like(16000, 2)
    anchor = anchor_frame(5)
    moved = anchor.copy()
    moved[POSE_SLICE] += np.array([0.2, -0.15, 0.1, 0.02, -0.03, 0.05], np.float32)
    relative = tiny_generator(pose_relative=True)
    a = generate_motion(relative, audio, other, anchor, seed=3)
    b = generate_motion(relative, audio, other, moved, seed=3)
    np.testing.assert_allclose(b[:, POSE_SLICE] - a[:, POSE_SLICE],
                               np.broadcast_to(moved[POSE_SLICE] - anchor[POSE_SLICE], a[:, POSE_SLICE].shape),
                               atol=1e-5)
    np.testing.assert_allclose(b[:, :POSE_SLICE.start], a[:, :POSE_SLICE.start], atol=1e-6)
    assert np.abs(np.diff(a[:, POSE_SLICE], axis=0)).max() > 1e-4  # the pose does move
    absolute = tiny_generator(pose_relative=False)
    c = generate_motion(absolute, audio, other, anchor, seed=3)
    d = generate_motion(absolute, audio, other, moved, seed=3)
    assert np.abs(d[:, :POSE_SLICE.start] - c[:, :POSE_SLICE.start]).max() > 1e-4


def test_spectral_augmentation_warps_frequencies_and_stays_in_bounds():
    from dystream.generator.audio_frontend import random_equaliser, warp_frequencies

    power = torch.zeros(2, 3, 201)
    power[:, :, 40] = 1.0  # one tone at bin 40
    same = warp_frequencies(power, torch.tensor([1.0, 1.0]))
    assert torch.allclose(same, power)
    warped = warp_frequencies(power, torch.tensor([1.25, 0.8]))
    assert warped[0, 0].argmax() == 50 and warped[1, 0].argmax() == 32  # up for > 1, down for < 1
    eq = random_equaliser(500, 64, 6.0, torch.Generator().manual_seed(0))
    bound = 6.0 * np.log(10.0) / 10.0
    assert eq.abs().max() <= bound + 1e-6 and eq.abs().max() > 0.5 * bound
    assert eq[:, 1:].sub(eq[:, :-1]).abs().max() < 0.2 * bound  # smooth across neighbouring bands


def _channel(batch=4, **options):
    from dystream.generator.audio_frontend import ChannelAugmentation

    settings = {"masks": 0, "mask_width": 0.15, "band_prob": 0.0, "reverb_prob": 0.0, **options}
    return ChannelAugmentation.draw(batch, 201, 16000, 160, generator=torch.Generator().manual_seed(0), **settings)


def test_channel_augmentation_off_is_the_identity_and_band_limits_cut_outside_the_band():
    power = torch.rand(4, 30, 201, generator=torch.Generator().manual_seed(1))
    assert torch.equal(_channel().apply(power), power)
    band = _channel(band_prob=1.0)
    hz = torch.linspace(0, 8000, 201)
    assert (band.gains[:, hz >= 6100] <= 1e-4 + 1e-9).all()          # above every low-pass
    assert (band.gains[:, (hz > 560) & (hz < 2400)] == 1).all()      # inside every band
    assert (band.gains[:, hz <= 4] <= 1e-4 + 1e-9).all()             # below every high-pass
    notched = _channel(batch=64, masks=1, mask_width=0.2)
    cut = (notched.gains < 1).float().sum(dim=1)
    assert (notched.gains[notched.gains < 1] == pytest.approx(1e-3)) and cut.max() > 0
    mel = 2595.0 * torch.log10(1.0 + hz / 700.0)
    for gains in notched.gains:                                        # each notch spans <= 20% of the mel range
        if (gains < 1).any():
            assert mel[gains < 1].max() - mel[gains < 1].min() <= 0.2 * mel[-1] + 1e-3


def test_channel_augmentation_reverb_is_a_causal_decaying_tail_of_the_right_energy():
    room = _channel(batch=3, reverb_prob=1.0)
    power = torch.zeros(3, 300, 201)
    power[:, 50, :] = 1.0                                               # an impulse at frame 50
    out = room.apply(power)
    assert torch.allclose(out[:, :50], torch.zeros(3, 50, 201), atol=1e-6)   # nothing before it
    assert torch.allclose(out[:, 50], power[:, 50], atol=1e-6)              # the direct sound as it was
    tail = out[:, 51:, 0]
    assert torch.allclose(tail.sum(dim=1), room.tail_energy, rtol=1e-3)     # -20 .. -6 dB of tail
    assert ((room.tail_energy >= 10 ** -2.0 - 1e-6) & (room.tail_energy <= 10 ** -0.6 + 1e-6)).all()
    assert (tail[:, 1:20] < tail[:, :19]).all()                              # decaying
    # In a model, only training mode draws a channel: eval features are the plain ones.
    model = tiny_generator(spec_masks=2, spec_band_prob=1.0, spec_reverb_prob=1.0)
    reference = tiny_generator()
    reference.load_state_dict(model.state_dict())
    audio = torch.from_numpy(speech_like(16000, 3))[None]
    with torch.no_grad():
        assert torch.equal(model.eval().self_encoder(audio, 10, model._augmentation(1, None, "cpu")),
                           reference.eval().self_encoder(audio, 10))
        model.train()
        augment = model._augmentation(1, torch.Generator().manual_seed(0), "cpu")
        assert set(augment) == {"channel"}
        assert not torch.equal(model.self_encoder(audio, 10, augment), model.self_encoder(audio, 10))
    with pytest.raises(InputError, match="spec_band_prob"):
        GeneratorConfig(spec_band_prob=1.5)


def test_channel_augmentation_level_and_noise_floor():
    # A level change alone scales each window's power by one gain within +/- gain_db.
    power = torch.rand(64, 50, 201, generator=torch.Generator().manual_seed(1)) + 0.1
    level = _channel(batch=64, gain_db=6.0)
    ratio = level.apply(power) / power
    per_window = ratio[:, 0, 0]
    assert torch.allclose(ratio, per_window[:, None, None].expand_as(ratio), rtol=1e-5)
    db = 10 * torch.log10(per_window)
    assert db.abs().max() <= 6.0 + 1e-4 and db.max() > 3.0 and db.min() < -3.0
    # A noise floor adds white noise (flat across bins, exponential per bin and frame) at an
    # SNR within the range under the window's mean power; the windows drawn without keep theirs.
    speech = torch.zeros(400, 400, 201)
    speech[:, ::4] = 1.0                                          # a loud frame every 4th
    noisy = _channel(batch=400, noise_prob=0.5, noise_snr=(10.0, 20.0))
    out = noisy.apply(speech)
    silent = out[:, 1::4]                                         # only noise here
    with_noise = silent.mean(dim=(1, 2)) > 0
    assert 0.3 < with_noise.float().mean() < 0.7
    assert torch.equal(out[~with_noise], speech[~with_noise])
    snr = 10 * torch.log10(speech.mean(dim=(1, 2))[with_noise] / silent.mean(dim=(1, 2))[with_noise])
    assert snr.min() > 10.0 - 0.3 and snr.max() < 20.0 + 0.3 and snr.max() - snr.min() > 5.0
    floor = silent[with_noise]
    assert (floor >= 0).all()
    normalised = floor / floor.mean(dim=(1, 2), keepdim=True)
    assert normalised.mean(dim=(0, 1)).std() < 0.05               # flat across frequency
    assert normalised.std() == pytest.approx(1.0, abs=0.05)       # exponential: std = mean
    # In a model: only training mode draws them, and the options are checked.
    model = tiny_generator(spec_gain_db=6.0, spec_noise_prob=1.0)
    model.train()
    augment = model._augmentation(2, torch.Generator().manual_seed(0), "cpu")
    assert set(augment) == {"channel"} and augment["channel"].noise_floor.gt(0).all()
    assert model.eval()._augmentation(2, None, "cpu") is None
    with pytest.raises(InputError, match="spec_noise_snr"):
        GeneratorConfig(spec_noise_snr=(30.0, 5.0))
    with pytest.raises(InputError, match="spec_noise_snr"):
        GeneratorConfig(spec_noise_snr=20.0)
    with pytest.raises(InputError, match="spec_gain_db"):
        GeneratorConfig(spec_gain_db=-1.0)


def test_vocal_tract_pooling_folds_warps_into_the_filterbank_and_takes_the_maximum():
    from dystream.generator.audio_frontend import LogMel, warp_frequencies

    audio = torch.from_numpy(speech_like(6400, 5))[None]
    plain = LogMel(32, 400, 160, 16000)
    pooled = LogMel(32, 400, 160, 16000, (0.8, 1.0, 1.25))
    mel = pooled(audio)
    assert mel.shape == (*plain(audio).shape[:2], 3, 32)
    assert torch.equal(mel[:, :, 1], plain(audio))
    # Each folded filterbank is the per-sample warp of the power spectrum, then the mel filters.
    frames = audio.unfold(-1, 400, 160) * plain.hann
    power = torch.fft.rfft(frames, dim=-1).abs().square()
    for k, factor in enumerate((0.8, 1.0, 1.25)):
        expected = (torch.log(warp_frequencies(power, torch.tensor([factor])) @ plain.mel_filters + 1e-6) + 4) / 4
        assert torch.allclose(mel[:, :, k], expected, atol=1e-4)
    # The encoder keeps the element-wise maximum of one projection over the versions;
    # with the single factor 1 it is the plain encoder with the same weights.
    single = tiny_generator(front_warps=(1.0,))
    reference = tiny_generator()
    reference.load_state_dict(single.state_dict())
    with torch.no_grad():
        a = single.self_encoder(audio, 4)
        b = reference.self_encoder(audio, 4)
    assert torch.allclose(a, b, atol=1e-6)
    model = tiny_generator(front_warps=(0.8, 1.0, 1.25))
    encoder = model.self_encoder
    with torch.no_grad():
        windows = encoder.logmel(audio[:, :encoder.samples_needed(4)]).unfold(1, encoder.front_kernel, 4)
        per_version = encoder.front(windows.flatten(3))  # [B, T, 3, H]
        assert torch.equal(encoder._front(encoder._windows(audio, 4)), per_version.amax(dim=2))
        assert (per_version.argmax(dim=2) != 1).any()  # other versions win somewhere
    with pytest.raises(InputError, match="front_warps"):
        GeneratorConfig(front_warps=(0.3, 1.0))


def test_deep_pooling_runs_the_first_blocks_on_every_version():
    audio = torch.from_numpy(speech_like(16000, 8))[None].repeat(2, 1)
    audio[1] *= 0.3
    model = tiny_generator(front_warps=(0.8, 1.0, 1.25), front_pool_depth=1)
    encoder = model.self_encoder
    with torch.no_grad():
        # By hand: each version through the front projection and the first block on its
        # own, the maximum over versions, then the other blocks.
        windows = encoder.logmel(audio[:, :encoder.samples_needed(6)]).unfold(1, encoder.front_kernel, 4)
        per_version = encoder.front(windows.flatten(3))  # [B, T, 3, H]
        first = torch.stack([encoder.blocks[0](per_version[:, :, k]) for k in range(3)], dim=2)
        x = first.amax(dim=2)
        for block in encoder.blocks[1:]:
            x = block(x)
        assert torch.allclose(encoder(audio, 6), encoder.out_norm(x), atol=1e-6)
        assert (first.argmax(dim=2) != 1).any()
    # The pooled block keeps one history per version and stream; the others one per stream.
    state = encoder.initial_state(2)
    assert [s.shape[0] for s in state] == [6, 2]
    for depth, warps in ((3, (0.8, 1.0)), (1, ())):
        with pytest.raises(InputError, match="front_pool_depth"):
            GeneratorConfig(audio_layers=2, front_warps=warps, front_pool_depth=depth)


def test_causal_ema_equals_its_recurrence_across_blocks():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(2, 50, 3, 4, generator=g)
    decay = 0.8 + 0.2 * torch.rand(2, 50, generator=g)
    start = torch.randn(2, 3, 4, generator=g)
    running, expected = start.clone(), []
    for t in range(50):
        running = decay[:, t, None, None] * running + values[:, t]
        expected.append(running)
    got = causal_ema(values, decay, start, block=7)  # 8 blocks, each carrying into the next
    torch.testing.assert_close(got, torch.stack(expected, 1), atol=1e-5, rtol=1e-5)


def _mel_windows(frames: int, bands: int = 8, level: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Speech-like mel windows [1, T, M, K=6] around ``level`` (the front end's units)."""
    g = torch.Generator().manual_seed(seed)
    return level + 0.3 * torch.randn(1, frames, bands, 6, generator=g)


def test_running_mean_takes_out_a_channel_and_holds_through_pauses():
    cfg = GeneratorConfig(n_mels=8, mean_norm_seconds=1.0, mean_norm_prior_frames=5.0)
    norm = RunningMean(cfg, (8,))
    with torch.no_grad():
        norm.prior.fill_(-0.2)
    frames = 500  # 20 s
    clean = _mel_windows(frames)
    tilt = torch.linspace(-1.0, 1.0, 8)[None, None, :, None]  # a colouring of 0 dB mean: same frame weights
    shifted_clean, _ = norm(clean)
    shifted_tilted, _ = norm(clean + tilt)
    gap = (shifted_tilted - shifted_clean).abs().amax(dim=(0, 2, 3))  # per frame
    assert gap[0] > 0.7  # one frame heard: the prior (5 frames) dominates, most of the channel passes
    # After 16 s of speech only the prior's share of the mean keeps the channel: c / (c + tau * fps)
    # (the sums hold about tau * fps frames of speech, a little more as these frames weigh ~1.1),
    # 5 / 30 here, under 2% with no prior.
    assert gap[-100:].max() < 1.05 * 5 / 30 and gap[-100:].min() > 0.75 * 5 / 30
    no_prior = RunningMean(GeneratorConfig(n_mels=8, mean_norm_seconds=1.0, mean_norm_prior_frames=1e-6), (8,))
    assert (no_prior(clean + tilt)[0] - no_prior(clean)[0])[:, -100:].abs().max() < 0.02
    # Speech moves the mean to the speech; a 10 s pause 60 dB down (mel units -1.7) barely moves it.
    loud = _mel_windows(250, level=0.5, seed=1)
    pause = _mel_windows(250, level=-1.7, seed=2)
    out, (n, d) = norm(torch.cat([loud, pause], dim=1))
    mean_after_speech = (out[:, 249] - loud[:, 249]).mean()  # = prior - m
    mean_after_pause = (out[:, -1] - pause[:, -1]).mean()
    assert abs((-0.2 - mean_after_speech).item() - 0.5) < 0.05
    assert abs(mean_after_pause - mean_after_speech).item() < 0.02
    # Streaming steps carry the same statistics as the offline call.
    state = (torch.zeros(1, 8), torch.zeros(1, 1))
    windows = torch.cat([loud, pause], dim=1)
    for t in range(windows.shape[1]):
        step_out, state = norm.step(windows[:, t:t + 1], state)
    torch.testing.assert_close(step_out[:, 0], out[:, -1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state[0], n, atol=1e-4, rtol=1e-5)


def test_statistics_frames_only_feed_the_running_mean():
    """Training windows bring earlier audio for the running mean alone: their features equal
    those of the same frames of one long offline call (past the conv layers' warm-up)."""
    model = tiny_generator(mean_norm_seconds=1.0, self_lookahead_ms=60)
    encoder, ctx = model.self_encoder, model.cfg.encoder_context_frames
    audio = torch.from_numpy(speech_like(encoder.samples_needed(60), 5))[None]
    with torch.no_grad():
        whole = encoder(audio, 60)
        windowed = encoder(audio, 35, stats_frames=25)
        plain = tiny_generator(self_lookahead_ms=60).self_encoder(audio, 35, stats_frames=25)
    torch.testing.assert_close(windowed[:, ctx:], whole[:, 25 + ctx:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(windowed[:, ctx:], encoder(audio[:, 25 * 640:], 35)[:, ctx:], atol=1e-3)
    assert plain.shape == windowed.shape  # without the running mean the extra audio is skipped
    with pytest.raises(ValueError, match="statistics frames"):
        encoder(audio[:, :-1], 35, stats_frames=25)
