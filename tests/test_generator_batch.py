"""Batched generation, the frame step fed audio (the CUDA-graph path), streams joining at other
frames, and batched evaluation."""

import numpy as np
import pytest
import torch

from dystream.config import SAMPLES_PER_FRAME
from dystream.errors import InputError
from dystream.generator.graphs import frame_step, graphs_enabled
from dystream.generator.offline import generate_motion, generate_motions
from dystream.generator.sampling import FrameStep, Sampling

from generator_helpers import single_thread  # noqa: F401  (autouse fixture)
from generator_helpers import anchor_frame, speech_like, tiny_generator

TOLERANCE = 1e-5
THREE = Sampling(steps=3)


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


def test_batch_rows_equal_single_stream_runs_whatever_else_is_in_the_batch(model):
    items = _items([1.3, 0.5, 2.1, 0.9])  # 32, 12, 52, 22 frames: the batch shrinks as clips end
    single = [generate_motion(model, a, b, anchor, seed=seed, sampling=THREE) for a, b, anchor, seed in items]
    together = generate_motions(model, items, sampling=THREE)
    assert [len(m) for m in together] == [len(s) for s in single] == [32, 12, 52, 22]
    for a, b in zip(together, single):
        assert np.abs(a - b).max() <= TOLERANCE
    # Other company, other batch size, other order: the same motion for the same item.
    others = _items([1.7, 0.3], first_seed=50)
    mixed = generate_motions(model, [others[0], items[2], others[1], items[0]], sampling=THREE, batch_size=3)
    assert np.abs(mixed[1] - single[2]).max() <= TOLERANCE
    assert np.abs(mixed[3] - single[0]).max() <= TOLERANCE
    alone = generate_motions(model, [items[1]], sampling=THREE)
    assert np.abs(alone[0] - single[1]).max() <= TOLERANCE
    # The streams really are different (seed, anchor, audio all differ).
    assert np.abs(together[0][:12] - together[1]).max() > 1e-3


def test_batch_keeps_seed_per_item_and_guidance(model):
    a, b, anchor, _ = _items([0.8])[0]
    sampling = Sampling(2, {"self": 1.0, "other": 0.0, "all": 0.5})
    out = generate_motions(model, [(a, b, anchor, 0), (a, b, anchor, 1), (a, None, anchor, 0)], sampling=sampling)
    assert not np.allclose(out[0], out[1])
    for got, seed, other in ((out[0], 0, b), (out[1], 1, b), (out[2], 0, None)):
        ref = generate_motion(model, a, other, anchor, seed=seed, sampling=sampling)
        assert np.abs(got - ref).max() <= TOLERANCE


def test_batch_bad_input_is_a_clear_error(model):
    good = _items([0.3])[0]
    assert generate_motions(model, []) == []
    with pytest.raises(InputError, match="too short"):
        generate_motions(model, [good, (np.zeros(10, np.float32), None, good[2], 0)])
    with pytest.raises(InputError, match="anchor of item 1"):
        generate_motions(model, [good, (good[0], None, np.zeros(3, np.float32), 0)])
    with pytest.raises(InputError, match="item 0 must be"):
        generate_motions(model, [(good[0], None)])
    with pytest.raises(InputError, match="batch_size"):
        generate_motions(model, [good], batch_size=0)
    with pytest.raises(InputError, match="seeds"):
        FrameStep(model, np.stack([good[2], good[2]]), [1])


def test_the_frame_step_fed_audio_equals_each_stream_alone_past_a_wrap_of_the_ring(model):
    """The graph-ready step (audio slices in fixed buffers, every index in tensors) for 3 streams
    at once equals each stream's offline motion, past two wraps of the ring; reset() starts over."""
    frames, streams = 40, 3  # window 16: the ring wraps twice
    spf, front = SAMPLES_PER_FRAME, model.cfg.front_left_samples
    clips = [(speech_like((frames + 4) * spf, 10 + b), speech_like((frames + 4) * spf, 20 + b)) for b in range(streams)]
    anchors, seeds = [anchor_frame(b) for b in range(streams)], [4, 9, 4]
    padded = [[np.concatenate([np.zeros(front, np.float32), x]) for x in clip] for clip in clips]
    with torch.inference_mode():
        step = FrameStep(model, anchors, seeds, THREE)

        def run(t):
            for stream, buffer in enumerate(step.audio):
                for b in range(streams):
                    buffer[b] = torch.from_numpy(padded[b][stream][t * spf: t * spf + buffer.shape[1]])
            return step().numpy().copy()

        batched = np.stack([run(t) for t in range(frames)])
        assert step.frame.tolist() == [frames] * streams
        for b, (a_s, a_o) in enumerate(clips):
            offline = generate_motion(model, a_s, a_o, anchors[b], seed=seeds[b], sampling=THREE)[:frames]
            assert np.abs(batched[:, b] - offline).max() <= TOLERANCE, b
        step.reset()
        assert np.abs(run(0) - batched[0]).max() <= TOLERANCE


def test_streams_kept_by_index_continue_unchanged(model):
    """keep(): streams leave a batch in any order; the others go on as if alone."""
    items = _items([1.2, 1.2, 1.2])
    alone = [generate_motion(model, a, b, anchor, seed=seed, sampling=THREE) for a, b, anchor, seed in items]
    from dystream.generator.offline import encode_clip

    with torch.inference_mode():
        features = [encode_clip(model, a, b, len(alone[0])) for a, b, _, _ in items]
        step = FrameStep(model, np.stack([i[2] for i in items]), [i[3] for i in items], THREE)
        order = [0, 1, 2]
        out = {k: [] for k in order}
        for t in range(len(alone[0])):
            if t == 10:
                order = [2, 0]  # stream 1 leaves; the others are re-ordered
                step.keep([2, 0])
            motion = step.sample(torch.cat([features[k][0][:, t] for k in order]),
                                 torch.cat([features[k][1][:, t] for k in order]))
            for row, k in enumerate(order):
                out[k].append(motion[row].numpy().copy())
    for k in (0, 2):
        assert np.abs(np.stack(out[k]) - alone[k]).max() <= TOLERANCE
    with pytest.raises(ValueError, match="keep"):
        step.keep([5])


def test_frame_step_is_eager_on_cpu_and_graphs_have_an_off_switch(model, monkeypatch):
    with torch.inference_mode():
        step, graphed = frame_step(model, [anchor_frame()], [0], Sampling(steps=2))
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
        eager, _ = frame_step(gpu_model, anchors, seeds, THREE, graphs=False)
        graphed, is_graphed = frame_step(gpu_model, anchors, seeds, THREE, graphs=True)
        assert is_graphed
        g = torch.Generator(device="cuda").manual_seed(0)
        worst = 0.0
        for _ in range(40):
            for a, b in zip(eager.audio, graphed.audio):
                a.copy_(0.1 * torch.randn(a.shape, device="cuda", generator=g))
                b.copy_(a)
            worst = max(worst, float((eager() - graphed()).abs().max()))
    assert worst <= 1e-4


def test_batched_evaluation_scores_equal_item_by_item(model):
    from dystream.evaluation.core import evaluate_many
    from dystream.evaluation.predictors import GeneratorPredictor
    from dystream.evaluation.toy import make_toy_conversation

    rng = np.random.default_rng(5)
    conversations = [make_toy_conversation(rng, seconds=s) for s in (6.0, 4.0, 8.0)]
    batched = GeneratorPredictor(model, Sampling(steps=2), batch_size=4)
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


def test_bench_graph_section_runs_and_matches_eager(monkeypatch):
    """The benchmark's graphed timing and graph-vs-eager check, exercised on CPU with the eager
    FrameStep standing in for the captured graph (the GPU runs the real capture)."""
    from dystream.commands import bench
    from dystream.generator import graphs

    def eager_as_graph(model, anchors, seeds, sampling=Sampling(), graphs=None):
        return FrameStep(model, anchors, seeds, sampling), True

    monkeypatch.setattr(graphs, "frame_step", eager_as_graph)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    model = tiny_generator(seed=1)
    for batch in (1, 3):
        anchors = np.stack([anchor_frame(b) for b in range(batch)])
        with torch.inference_mode():
            out = bench._bench_graphed(model, anchors, list(range(batch)), Sampling(steps=2), frames=5, warmup=1,
                                       compare_frames=30)
        assert out["graphed"]["median_ms"] > 0 and out["compare_frames"] == 30
        assert out["graph_max_abs_diff"] <= TOLERANCE


def test_a_pose_relative_batch_equals_single_streams_with_their_own_anchors():
    relative = tiny_generator(seed=4, pose_relative=True)
    items = _items([0.9, 1.4, 0.6], first_seed=20)
    single = [generate_motion(relative, a, b, anchor, seed=seed, sampling=THREE) for a, b, anchor, seed in items]
    together = generate_motions(relative, items, sampling=THREE)
    for a, b in zip(together, single):
        assert np.abs(a - b).max() <= TOLERANCE


def test_streams_join_and_leave_a_step_at_any_frame_and_stay_as_alone():
    """add() and remove(): streams start at other frames in one step (each row at its own frame),
    leave in any order (the last stream moves into the freed row, buffers keep their memory), and
    each stream's motion is its offline motion alone, bit for bit (float64 encoders, as the CPU
    runs them for inference: a clip and a frame at a time then give the same features)."""
    model = tiny_generator(seed=3).set_encoder_dtype(torch.float64)
    spf, front = SAMPLES_PER_FRAME, model.cfg.front_left_samples
    frames = 30
    clips = [(speech_like((frames + 16) * spf, 40 + k), speech_like((frames + 16) * spf, 50 + k)) for k in range(3)]
    anchors, seeds = [anchor_frame(10 + k) for k in range(3)], [3, 8, 3]
    alone = [generate_motion(model, a, b, anchors[k], seed=seeds[k], sampling=THREE)[:frames]
             for k, (a, b) in enumerate(clips)]
    padded = [[np.concatenate([np.zeros(front, np.float32), x]) for x in clip] for clip in clips]
    joins, leaves = {0: 0, 5: 1, 9: 2}, {12: 0, 20: 2}
    with torch.inference_mode():
        step = FrameStep(model, np.zeros((0, model.cfg.motion_dim)), [], THREE, capacity=4)
        memory = step._cache.keys.data_ptr()
        row_of, started, out = {}, {}, {k: [] for k in range(3)}
        for t in range(frames + 10):
            if t in joins:
                k = joins[t]
                row_of[k], started[k] = step.add(anchors[k], seeds[k]), t
            if t in leaves:
                freed = row_of.pop(leaves[t])
                moved_from = step.remove(freed)
                for k, r in row_of.items():
                    if r == moved_from:
                        row_of[k] = freed
            if not row_of:
                break
            for k, r in row_of.items():
                f = t - started[k]
                for stream, buffer in enumerate(step.audio):
                    buffer[r] = torch.from_numpy(padded[k][stream][f * spf: f * spf + buffer.shape[1]])
            motion = step().numpy()
            for k, r in row_of.items():
                if t - started[k] < frames:
                    out[k].append(motion[r].copy())
        assert step._cache.keys.data_ptr() == memory
    for k in range(3):
        assert len(out[k]) > 5
        assert np.array_equal(np.stack(out[k]), alone[k][:len(out[k])]), k
