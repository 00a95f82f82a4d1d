"""The generator network: presets, the one attention (window == ring), the encoders'
causality, growing trained weights, guidance, noise, offline generation and weights files."""

import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from dystream.config import SAMPLE_RATE, SAMPLES_PER_FRAME
from dystream.errors import DystreamError, InputError
from dystream.generator.config import PRESETS, GeneratorConfig, migrate_config, preset
from dystream.generator.guidance import plan_guidance
from dystream.generator.model import Generator
from dystream.generator.offline import generate_motion
from dystream.generator.sampling import Sampling, frame_noise, seed_keys
from dystream.generator.weights import DEFAULT_WEIGHTS, load_generator, read_metadata, save_weights
from dystream.motion import MOTION_DIM
from dystream.streaming import StreamingSession

from generator_helpers import single_thread  # noqa: F401  (autouse fixture)
from generator_helpers import anchor_frame, speech_like, tiny_generator

SPF = SAMPLES_PER_FRAME
THREE_STEPS = Sampling(steps=3)


def test_the_small_preset_is_the_bundled_model_and_parameters_add_up():
    bundled = load_generator()
    assert bundled.cfg == preset("small")  # `train --preset small` trains the architecture that ships
    small = bundled.parameter_counts()
    cfg = bundled.cfg
    nulls = 2 * cfg.audio_width + cfg.width  # null self / other audio, null anchor
    assert small["total"] == small["audio encoders"] + small["transformer"] + small["flow head"] + nulls
    assert 1e6 < small["total"] < 20e6
    large = preset("large")
    assert (large.width, large.layers, large.heads, large.head_width, large.head_blocks) == (768, 12, 12, 768, 6)
    assert set(PRESETS) == {"small", "large"}
    with pytest.raises(InputError, match="unknown generator preset"):
        preset("paper")


def test_every_config_field_is_used_by_a_preset_or_the_shipped_weights():
    """The architecture config holds no option that is off everywhere: each field differs from
    its default in some preset or in the bundled weights, or is a size every model needs."""
    default = asdict(GeneratorConfig())
    shipped = json.loads(read_metadata(DEFAULT_WEIGHTS)["config"])
    options = {"front_warps", "pose_relative"}  # on/off options; every other field is a size
    for name in options:
        assert any(asdict(cfg)[name] != default[name] for cfg in PRESETS.values()) or shipped[name] != default[name]


def test_bad_config_is_a_clear_error():
    with pytest.raises(InputError, match="lookahead"):
        GeneratorConfig(self_lookahead_ms=130)
    with pytest.raises(InputError, match="10 ms"):
        GeneratorConfig(other_lookahead_ms=45)
    with pytest.raises(InputError, match="front_warps"):
        GeneratorConfig(front_warps=(0.3, 1.0))
    with pytest.raises(InputError, match="heads"):
        GeneratorConfig(width=100, heads=3)


def test_old_configs_are_migrated_and_removed_options_refused():
    old = {**asdict(preset("small")), "dropout": 0.1, "phone_weight": 0.1, "spec_warp": 0.0, "guidance": {},
           "sampler_steps": 5, "mean_norm_seconds": 0.0, "front_pool_depth": 0}
    assert GeneratorConfig(**migrate_config(old)) == preset("small")
    with pytest.raises(InputError, match="mean_norm_seconds"):
        migrate_config({**old, "mean_norm_seconds": 2.0})
    with pytest.raises(InputError, match="front_pool_depth"):
        migrate_config({**old, "front_pool_depth": 1})
    with pytest.raises(InputError, match="unknown generator config fields"):
        migrate_config({**old, "wings": 2})


def test_audio_context_matches_what_the_encoders_read():
    model = tiny_generator(self_lookahead_ms=60, other_lookahead_ms=20)
    left, right = model.audio_context()
    cfg = model.cfg
    assert right == 60 * SAMPLE_RATE // 1000
    assert left == cfg.front_left_samples + cfg.encoder_context_frames * SPF
    assert model.self_encoder.samples_needed(5) == cfg.front_left_samples + 5 * SPF + 960


def test_one_frame_at_a_time_equals_a_window_in_the_transformer_beyond_the_ring():
    """The ring step and the window pass are the same attention: same c_t over 30 frames with
    W = 8 (the ring wraps more than three times), rows at different frames alike."""
    model = tiny_generator(window=8)
    tf = model.transformer
    frames = 30
    g = torch.Generator().manual_seed(0)
    prev = torch.randn(2, frames, MOTION_DIM, generator=g)
    fused = torch.randn(2, frames, model.cfg.width, generator=g)
    anchor = model.anchor_token(torch.randn(2, MOTION_DIM, generator=g), torch.tensor([True, False]))
    with torch.inference_mode():
        full = tf(prev, fused, anchor)
        cache = tf.new_cache(anchor)
        stepped = torch.cat([tf.step(prev[:, t:t + 1], fused[:, t:t + 1], cache, torch.tensor([t, t]))
                             for t in range(frames)], 1)
        # Row 1 starts 5 frames later than row 0 in one ring: each row keeps its own frame.
        late = tf.new_cache(anchor)
        rows = []
        for t in range(frames):
            index = torch.tensor([t, max(t - 5, 0)])
            out = tf.step(torch.stack([prev[0, t], prev[1, max(t - 5, 0)]])[:, None],
                          torch.stack([fused[0, t], fused[1, max(t - 5, 0)]])[:, None], late, index)
            rows.append(out)
    assert (full - stepped).abs().max().item() < 1e-5
    assert (torch.cat(rows, 1)[0] - full[0]).abs().max().item() < 1e-5
    # Each layer looks back W-1 frames, so a frame's influence ends layers * (W-1) frames later.
    prev2 = prev.clone()
    prev2[:, 3] += 1.0
    with torch.inference_mode():
        full2 = tf(prev2, fused, anchor)
    reach = 3 + model.cfg.layers * (model.cfg.window - 1)
    assert torch.equal(full2[:, reach + 1:], full[:, reach + 1:])
    assert not torch.allclose(full2[:, reach], full[:, reach])


@pytest.mark.parametrize("warps", [(), (0.8, 1.0, 1.25)])
def test_the_encoder_frame_by_frame_equals_the_whole_clip(warps):
    model = tiny_generator(front_warps=warps)
    encoder = model.self_encoder
    frames = 12
    audio = torch.from_numpy(speech_like(encoder.samples_needed(frames), 3))[None]
    with torch.inference_mode():
        whole, _ = encoder(audio, frames)
        state, steps = None, []
        for f in range(frames):
            out, state = encoder(audio[:, f * SPF: f * SPF + encoder.step_samples], 1, state)
            steps.append(out)
    assert (torch.cat(steps, 1) - whole).abs().max().item() < 1e-5


@pytest.mark.parametrize("lookahead_ms", [0, 60, 120])
def test_audio_beyond_the_lookahead_never_changes_earlier_frames(lookahead_ms):
    model = tiny_generator(self_lookahead_ms=lookahead_ms, other_lookahead_ms=lookahead_ms)
    frames = 20
    self_audio, other_audio = speech_like(frames * SPF, 1), speech_like(frames * SPF, 2)
    anchor = anchor_frame()
    base = generate_motion(model, self_audio, other_audio, anchor, seed=1, sampling=THREE_STEPS)
    change_at = 12 * SPF + 17
    for stream in (0, 1):
        changed = [self_audio.copy(), other_audio.copy()]
        changed[stream][change_at:] = speech_like(frames * SPF - change_at, 9)
        out = generate_motion(model, *changed, anchor, seed=1, sampling=THREE_STEPS)
        # Frame f reads audio up to 640 (f + 1) + lookahead samples.
        last_safe = (change_at - lookahead_ms * SAMPLE_RATE // 1000) // SPF - 1
        assert np.array_equal(out[: last_safe + 1], base[: last_safe + 1])
        assert not np.allclose(out[last_safe + 1], base[last_safe + 1])


def _assert_same_motion(grown: Generator, trained: Generator, frames: int = 20):
    """Offline motion of a model grown from trained weights equals the trained model's (1e-5);
    returns the trained model's motion and the audio (self, other)."""
    audio = speech_like(frames * SPF, 3), speech_like(frames * SPF, 4)
    expected = generate_motion(trained, *audio, anchor_frame(), seed=2, sampling=THREE_STEPS)
    np.testing.assert_allclose(generate_motion(grown, *audio, anchor_frame(), seed=2, sampling=THREE_STEPS),
                               expected, atol=1e-5)
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
    # Streaming too: the grown encoder's step equals the file's offline motion.
    session = StreamingSession(deep, anchor_frame(), seed=2, sampling=THREE_STEPS)
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
    with pytest.raises(InputError, match="steps"):
        Sampling(steps=0)


def test_frame_noise_depends_only_on_seed_and_frame():
    keys = seed_keys(torch.tensor([7, 7, 8]))
    a = frame_noise(keys[:1].expand(100), torch.arange(0, 100), MOTION_DIM)
    b = frame_noise(keys, torch.tensor([42, 3, 42]), MOTION_DIM)
    assert torch.equal(a[42], b[0]) and torch.equal(a[3], b[1])
    assert not torch.equal(b[2], a[42])  # another seed
    many = frame_noise(keys[:1].expand(4000), torch.arange(4000), MOTION_DIM)
    assert abs(many.mean().item()) < 0.02 and abs(many.std().item() - 1) < 0.02
    assert abs(torch.corrcoef(torch.stack([many[:-1].flatten(), many[1:].flatten()]))[0, 1].item()) < 0.02


def test_generate_motion_shapes_seed_and_bad_input():
    model = tiny_generator()
    audio = speech_like(SAMPLE_RATE, 3)
    out = generate_motion(model, audio, None, anchor_frame(), seed=0)
    assert out.shape == (25, MOTION_DIM) and np.all(np.isfinite(out))
    again = generate_motion(model, audio, np.zeros(5, np.float32), anchor_frame(), seed=0)
    assert np.array_equal(out, again)  # a silent partner, padded, is the same as none
    assert not np.allclose(out, generate_motion(model, audio, None, anchor_frame(), seed=1))
    with pytest.raises(InputError, match="too short"):
        generate_motion(model, np.zeros(100, np.float32), None, anchor_frame())
    with pytest.raises(InputError, match="anchor"):
        generate_motion(model, audio, None, np.zeros(3, np.float32))


@pytest.mark.parametrize("options", [{}, {"front_warps": (0.8, 1.0, 1.25), "pose_relative": True}])
def test_weights_round_trip(tmp_path, options):
    model = tiny_generator(self_lookahead_ms=40, **options)
    path = save_weights(model, tmp_path / "g.safetensors", {"steps": 12})
    loaded = load_generator(path)
    assert loaded.cfg == model.cfg and loaded.weights_info == {"steps": 12}
    assert read_metadata(path)["format"] == "dystream-generator-2"
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


def test_weights_of_the_first_format_still_load_and_compute_the_same(tmp_path):
    """Files written before the architecture and the recipe were separated carried the recipe in
    their config and the auxiliary heads' tensors: both are dropped on load, which changes
    nothing the network computes."""
    from safetensors.torch import save_file

    model = tiny_generator(pose_relative=True)
    cfg = {**asdict(model.cfg), "dropout": 0.1, "future_frames": 8, "future_weight": 0.05, "phone_weight": 0.1,
           "voice_adversary_weight": 0.1, "head_draws": 1, "loss_channel_weights": {}, "spec_noise_snr": [5, 30],
           "sampler_steps": 5, "guidance": {"self": 0.5}, "mean_norm_seconds": 0.0, "front_pool_depth": 0}
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    tensors.update({"future_probe.weight": torch.randn(8 * MOTION_DIM, model.cfg.width, generator=g),
                    "phone_probe.bias": torch.zeros(40), "voice_probe.weight": torch.zeros(64, model.cfg.audio_width)})
    path = tmp_path / "old.safetensors"
    save_file(tensors, str(path), metadata={"config": json.dumps(cfg), "info": json.dumps({"steps": 3}),
                                            "format": "dystream-generator-1"})
    loaded = load_generator(path)
    assert loaded.cfg == model.cfg and loaded.weights_info == {"steps": 3}
    audio = speech_like(8000, 4)
    assert np.array_equal(generate_motion(model.set_encoder_dtype(torch.float64), audio, None, anchor_frame()),
                          generate_motion(loaded, audio, None, anchor_frame()))


def test_a_pose_relative_model_moves_its_pose_with_the_anchor_and_nothing_else():
    """Pose is modelled relative to the anchor: shifting the anchor's head pose shifts every
    generated frame's pose by the same amount and leaves the expression exactly as it was;
    the paper's absolute model has no such property."""
    from dystream.motion import POSE_SLICE

    audio, other = speech_like(SAMPLE_RATE, 1), speech_like(SAMPLE_RATE, 2)
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


def test_vocal_tract_pooling_folds_warps_into_the_filterbank_and_takes_the_maximum():
    from dystream.generator.audio_frontend import LogMel, warp_frequencies

    audio = torch.from_numpy(speech_like(6400, 5))[None]
    plain = LogMel(32, 400, 160, SAMPLE_RATE)
    pooled = LogMel(32, 400, 160, SAMPLE_RATE, (0.8, 1.0, 1.25))
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
        a, _ = single.self_encoder(audio, 4)
        b, _ = reference.self_encoder(audio, 4)
    assert torch.allclose(a, b, atol=1e-6)
    model = tiny_generator(front_warps=(0.8, 1.0, 1.25))
    encoder = model.self_encoder
    with torch.no_grad():
        windows = encoder.logmel(audio[:, :encoder.samples_needed(4)]).unfold(1, encoder.front_kernel, 4)
        per_version = encoder.front(windows.flatten(3))  # [B, T, 3, H]
        assert (per_version.argmax(dim=2) != 1).any()  # other versions win somewhere
        # Zeroing the blocks' outputs leaves out_norm(max over versions of the front projection).
        for block in encoder.blocks:
            block.mlp[2].weight.zero_()
            block.mlp[2].bias.zero_()
        features, _ = encoder(audio, 4)
        assert torch.allclose(features, encoder.out_norm(per_version.amax(dim=2)), atol=1e-6)
