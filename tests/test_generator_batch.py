"""Batched rollout, batched generation, the device-tensor frame step and batched evaluation."""

import numpy as np
import pytest
import torch

from dystream.errors import InputError
from dystream.generator.graphs import FrameStep, frame_step, graphs_enabled
from dystream.generator.guidance import frame_noise
from dystream.generator.inference import (Rollout, generate_motion, generate_motion_batch, keyed_frame_noise,
                                          seed_keys)

from generator_helpers import single_thread  # noqa: F401  (autouse fixture)
from generator_helpers import anchor_frame, speech_like, tiny_generator

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def model():
    return tiny_generator(seed=3)


def _items(lengths_s, first_seed=0):
    """(self audio, other audio, anchor, seed) of different lengths, partner shorter or longer."""
    items = []
    for k, seconds in enumerate(lengths_s):
        n = int(seconds * 16000)
        other = speech_like(n + (-3000 if k % 2 else 5000), 100 + first_seed + k)
        items.append((speech_like(n, first_seed + k), other, anchor_frame(first_seed + k), first_seed + k))
    return items


def test_keyed_noise_equals_frame_noise_row_by_row():
    seeds = [0, 1, 7, 123456]
    keys = seed_keys(torch.tensor(seeds))
    channels = torch.arange(31)
    for frame in (0, 5, 10**7):
        batch = keyed_frame_noise(keys, torch.tensor([frame]), channels)
        for row, seed in enumerate(seeds):
            assert torch.equal(batch[row], frame_noise(seed, torch.tensor([frame]), 31)[0])
    assert not torch.equal(batch[0], batch[1])


def test_batch_rows_equal_single_stream_runs_whatever_else_is_in_the_batch(model):
    items = _items([1.3, 0.5, 2.1, 0.9])  # 32, 12, 52, 22 frames: the batch shrinks as clips end
    single = [generate_motion(model, a, b, anchor, seed=seed, steps=3) for a, b, anchor, seed in items]
    together = generate_motion_batch(model, items, steps=3)
    assert [len(m) for m in together] == [len(s) for s in single] == [32, 12, 52, 22]
    for a, b in zip(together, single):
        assert np.abs(a - b).max() <= TOLERANCE
    # Other company, other batch size, other order: the same motion for the same item.
    others = _items([1.7, 0.3], first_seed=50)
    mixed = generate_motion_batch(model, [others[0], items[2], others[1], items[0]], steps=3, batch_size=3)
    assert np.abs(mixed[1] - single[2]).max() <= TOLERANCE
    assert np.abs(mixed[3] - single[0]).max() <= TOLERANCE
    alone = generate_motion_batch(model, [items[1]], steps=3)
    assert np.abs(alone[0] - single[1]).max() <= TOLERANCE
    # The streams really are different (seed, anchor, audio all differ).
    assert np.abs(together[0][:12] - together[1]).max() > 1e-3


def test_batch_keeps_seed_per_item_and_guidance(model):
    a, b, anchor, _ = _items([0.8])[0]
    guidance = {"self": 1.0, "other": 0.0, "all": 0.5}
    out = generate_motion_batch(model, [(a, b, anchor, 0), (a, b, anchor, 1), (a, None, anchor, 0)],
                                steps=2, guidance=guidance)
    assert not np.allclose(out[0], out[1])
    for got, seed, other in ((out[0], 0, b), (out[1], 1, b), (out[2], 0, None)):
        ref = generate_motion(model, a, other, anchor, seed=seed, steps=2, guidance=guidance)
        assert np.abs(got - ref).max() <= TOLERANCE


def test_batch_bad_input_is_a_clear_error(model):
    good = _items([0.3])[0]
    assert generate_motion_batch(model, []) == []
    with pytest.raises(InputError, match="too short"):
        generate_motion_batch(model, [good, (np.zeros(10, np.float32), None, good[2], 0)])
    with pytest.raises(InputError, match="anchor of item 1"):
        generate_motion_batch(model, [good, (good[0], None, np.zeros(3, np.float32), 0)])
    with pytest.raises(InputError, match="item 0 must be"):
        generate_motion_batch(model, [(good[0], None)])
    with pytest.raises(InputError, match="batch_size"):
        generate_motion_batch(model, [good], batch_size=0)
    with pytest.raises(InputError, match="seeds"):
        Rollout(model, np.stack([good[2], good[2]]), seed=[1])


def test_frame_step_with_device_tensor_positions_equals_eager_streams(model):
    """The graph-ready step (frame index, slot, angle, noise counter in tensors) computes the
    same function as the encoders' step + Rollout.step, per stream, past a wrap of the ring."""
    frames, streams = 40, 3  # window 16: the ring wraps twice
    enc_s, enc_o = model.self_encoder, model.other_encoder
    audio = [(speech_like(frames * enc_s.step_samples, 10 + b), speech_like(frames * enc_o.step_samples, 20 + b))
             for b in range(streams)]
    anchors, seeds = [anchor_frame(b) for b in range(streams)], [4, 9, 4]
    with torch.inference_mode():
        step = FrameStep(model, anchors, seeds, steps=3)
        batched = np.zeros((frames, streams, model.cfg.motion_dim), np.float32)
        for t in range(frames):
            for b, (a_s, a_o) in enumerate(audio):
                step.self_audio[b] = torch.from_numpy(a_s[t * enc_s.step_samples:(t + 1) * enc_s.step_samples])
                step.other_audio[b] = torch.from_numpy(a_o[t * enc_o.step_samples:(t + 1) * enc_o.step_samples])
            batched[t] = step().numpy()
        assert int(step.frame) == frames
        for b, (a_s, a_o) in enumerate(audio):
            rollout = Rollout(model, anchors[b], steps=3, seed=seeds[b])
            st_s, st_o = enc_s.initial_state(1), enc_o.initial_state(1)
            for t in range(frames):
                s = torch.from_numpy(a_s[t * enc_s.step_samples:(t + 1) * enc_s.step_samples])[None]
                o = torch.from_numpy(a_o[t * enc_o.step_samples:(t + 1) * enc_o.step_samples])[None]
                f_s, st_s = enc_s.step(s, st_s)
                f_o, st_o = enc_o.step(o, st_o)
                expected = rollout.step(f_s[:, 0], f_o[:, 0]).numpy()
                assert np.abs(batched[t, b] - expected).max() <= TOLERANCE, (t, b)
        # reset() starts the same streams over: the first frames come back.
        first = batched[0].copy()
        step.reset()
        for b, (a_s, a_o) in enumerate(audio):
            step.self_audio[b] = torch.from_numpy(a_s[:enc_s.step_samples])
            step.other_audio[b] = torch.from_numpy(a_o[:enc_o.step_samples])
        assert np.abs(step().numpy() - first).max() <= TOLERANCE


def test_frame_step_is_eager_on_cpu_and_graphs_have_an_off_switch(model, monkeypatch):
    with torch.inference_mode():
        step, graphed = frame_step(model, [anchor_frame()], [0], steps=2)
    assert isinstance(step, FrameStep) and graphed is False
    monkeypatch.setenv("DYSTREAM_CUDA_GRAPHS", "0")
    assert graphs_enabled() is False
    monkeypatch.setenv("DYSTREAM_CUDA_GRAPHS", "1")
    assert graphs_enabled() is True


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_step_equals_eager_step():
    gpu_model = tiny_generator(seed=3).to("cuda")
    anchors, seeds = [anchor_frame(0), anchor_frame(1)], [0, 5]
    with torch.inference_mode():
        eager, _ = frame_step(gpu_model, anchors, seeds, steps=3, graphs=False)
        graphed, is_graphed = frame_step(gpu_model, anchors, seeds, steps=3, graphs=True)
        assert is_graphed
        g = torch.Generator(device="cuda").manual_seed(0)
        worst = 0.0
        for _ in range(40):
            s = 0.1 * torch.randn(eager.self_audio.shape, device="cuda", generator=g)
            o = 0.1 * torch.randn(eager.other_audio.shape, device="cuda", generator=g)
            for step in (eager, graphed):
                step.self_audio.copy_(s)
                step.other_audio.copy_(o)
            worst = max(worst, float((eager() - graphed()).abs().max()))
    assert worst <= 1e-4


def test_batched_evaluation_scores_equal_item_by_item(model):
    from dystream.evaluation.core import evaluate_many
    from dystream.evaluation.predictors import GeneratorPredictor
    from dystream.evaluation.toy import make_toy_conversation

    rng = np.random.default_rng(5)
    conversations = [make_toy_conversation(rng, seconds=s) for s in (6.0, 4.0, 8.0)]
    batched = GeneratorPredictor(model, steps=2, batch_size=4)
    calls = []

    def one_by_one(conv, party, seed):
        calls.append((conv.id, party, seed))
        return batched(conv, party, seed)  # __call__: the single-stream path

    report = evaluate_many(conversations, {"batched": batched, "single": one_by_one}, seeds=(0, 1))
    assert len(calls) == 3 * 2 * 2
    for key, value in report["single"]["scores"].items():
        other = report["batched"]["scores"][key]
        assert (np.isnan(value) and np.isnan(other)) or abs(value - other) <= 1e-6, key
    assert report["data"]["conversations"] == 3


def test_bench_graph_section_runs_and_matches_eager(monkeypatch, capsys):
    """The benchmark's graphed timing and graph-vs-eager check, exercised on CPU with the eager
    FrameStep standing in for the captured graph (the GPU runs the real capture)."""
    from dystream.commands import bench
    from dystream.generator import graphs

    def eager_as_graph(model, anchors, seeds, *, steps=5, guidance=None, graphs=None):
        return FrameStep(model, anchors, seeds, steps=steps, guidance=guidance), True

    monkeypatch.setattr(graphs, "frame_step", eager_as_graph)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    model = tiny_generator(seed=1)
    for batch in (1, 3):
        anchors = np.stack([anchor_frame(b) for b in range(batch)])
        enc_s, enc_o = model.self_encoder, model.other_encoder
        with torch.inference_mode():
            a_s = 0.1 * torch.randn(batch, enc_s.step_samples)
            a_o = 0.1 * torch.randn(batch, enc_o.step_samples)
            out = bench._bench_graphed(model, anchors, list(range(batch)), 2, a_s, a_o, frames=5, warmup=1,
                                       compare_frames=30)
        assert out["graphed"]["median_ms"] > 0 and out["compare_frames"] == 30
        assert out["graph_max_abs_diff"] <= TOLERANCE


def test_a_pose_relative_batch_equals_single_streams_with_their_own_anchors():
    relative = tiny_generator(seed=4, pose_relative=True)
    items = _items([0.9, 1.4, 0.6], first_seed=20)
    single = [generate_motion(relative, a, b, anchor, seed=seed, steps=3) for a, b, anchor, seed in items]
    together = generate_motion_batch(relative, items, steps=3)
    for a, b in zip(together, single):
        assert np.abs(a - b).max() <= TOLERANCE
