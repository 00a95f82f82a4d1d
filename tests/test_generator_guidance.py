"""Per-channel guidance: the head pose channels' own branch weights (``pose_guidance``)."""

import math

import numpy as np
import pytest
import torch

from dystream.cli import main
from dystream.errors import InputError
from dystream.config import SAMPLES_PER_FRAME
from dystream.generator.guidance import DEFAULT_POSE_GUIDANCE, GuidancePlan, parse_pose_guidance, plan_guidance
from dystream.generator.offline import encode_clip, generate_motion, generate_motions
from dystream.generator.sampling import FrameStep, Sampling
from dystream.motion import MOTION_DIM, POSE_SLICE
from dystream.streaming import StreamingSession

from generator_helpers import single_thread  # noqa: F401  (autouse fixture)
from generator_helpers import anchor_frame, feed_interleaved, speech_like, tiny_generator

SPF = SAMPLES_PER_FRAME

EXPRESSION = slice(0, POSE_SLICE.start)
PAPER = {"self": 0.5, "other": 0.5, "all": 1.0}


@pytest.fixture(scope="module")
def model():
    return tiny_generator(seed=6, pose_relative=True)


@pytest.fixture(scope="module")
def clip():
    frames = 30
    return speech_like(frames * SPF, 1), speech_like(frames * SPF, 2), anchor_frame(4)


def _sampling(steps=3, **options):
    return Sampling(steps, options.get("guidance"), options.get("pose_guidance"))


def _motion(model, a, b, anchor, seed, steps=3, **options):
    return generate_motion(model, a, b, anchor, seed=seed, sampling=_sampling(steps, **options))


def test_plans_and_coefficients():
    paper = plan_guidance(pose_guidance=1.0)
    assert paper == GuidancePlan(("none", "self", "other", "all"), (0.0, 0.5, 0.5, 1.0))
    assert paper.weight_tensor().shape == (4,)  # shared coefficients: the old [n] vector
    assert plan_guidance(pose_guidance=dict(PAPER)) == paper  # the same weights are no pose weights
    half = plan_guidance(pose_guidance=0.5)
    assert half.pose_weights == (0.0, 0.25, 0.25, 1.0)
    c = half.weight_tensor(dtype=torch.float64)
    assert c.shape == (4, MOTION_DIM)
    assert torch.equal(c[:, 0], torch.tensor([-1.0, 0.5, 0.5, 1.0], dtype=torch.float64))
    assert torch.equal(c[:, EXPRESSION], c[:, :1].expand(4, POSE_SLICE.start))
    # s c + (1 - s) e_all on the pose columns; every column sums to 1.
    expected = 0.5 * torch.tensor([-1.0, 0.5, 0.5, 1.0]) + 0.5 * torch.tensor([0.0, 0, 0, 1])
    assert torch.allclose(c[:, POSE_SLICE], expected[:, None].double())
    assert torch.allclose(c.sum(0), torch.ones(MOTION_DIM, dtype=torch.float64))
    # A dict is merged over the expression weights; it can add a branch the expression skips.
    no_self = plan_guidance(pose_guidance={"self": 0})
    assert no_self.branches == paper.branches and no_self.pose_weights == (0.0, 0.0, 0.5, 1.0)
    extra = plan_guidance({"self": 0, "other": 0}, {"other": 0.5})
    assert extra.branches == ("none", "other", "all") and extra.weights == (0.0, 0.0, 1.0)
    # "all" alone stays one branch whatever the scale (its pose is already the "all" branch's).
    for s in (0.0, 0.3, 1.0):
        assert plan_guidance({"self": 0, "other": 0}, s) == GuidancePlan(("all",), (1.0,))


def test_combine_per_channel():
    torch.manual_seed(0)
    x0 = torch.randn(3, 4, MOTION_DIM, dtype=torch.float64)  # [B, n, D]: none, self, other, all
    shared = plan_guidance(pose_guidance=1.0)
    reference = shared.combine(x0, shared.weight_tensor(dtype=torch.float64))
    for s in (0.0, 0.25, 0.5, 0.9):
        plan = plan_guidance(pose_guidance=s)
        guided = plan.combine(x0, plan.weight_tensor(dtype=torch.float64))
        assert guided.shape == (3, MOTION_DIM)
        # The expression channels keep the shared guidance ...
        assert torch.allclose(guided[:, EXPRESSION], reference[:, EXPRESSION], atol=1e-12)
        # ... the pose moves from it (s = 1) to the "all" branch (s = 0).
        all_pose = x0[:, 3, POSE_SLICE]
        assert torch.allclose(guided[:, POSE_SLICE], s * reference[:, POSE_SLICE] + (1 - s) * all_pose,
                              atol=1e-12)
    zero = plan_guidance(pose_guidance=0.0)
    assert torch.equal(zero.combine(x0[0], zero.weight_tensor(dtype=torch.float64))[POSE_SLICE],
                       x0[0, 3, POSE_SLICE])  # exactly: the other branches' coefficients are 0


def test_scale_one_reproduces_the_shared_guidance_exactly(model, clip):
    """Pose guidance 1 (or the expression's own weights) is the paper's shared guidance: the same
    plan, one [n] coefficient vector, and the same motion alone and in a batch."""
    a, b, anchor = clip
    shared = plan_guidance(pose_guidance=1.0)
    assert shared.pose_weights is None and shared.weight_tensor().shape == (shared.size,)
    reference = _motion(model, a, b, anchor, 7, pose_guidance=1.0)
    for pose_guidance in (1, dict(PAPER)):
        assert plan_guidance(pose_guidance=pose_guidance) == shared
        assert np.array_equal(_motion(model, a, b, anchor, 7, pose_guidance=pose_guidance), reference)
    together = generate_motions(model, [(a, b, anchor, 7), (b, a, anchor_frame(5), 8)], sampling=_sampling(pose_guidance=1.0))
    assert np.abs(together[0] - reference).max() <= 1e-5


def test_scale_zero_pose_is_the_all_branch_and_expression_keeps_its_guidance(model, clip):
    # One sampler step of the first frame: the guided x0 itself (later steps and frames see the
    # changed pose in their input, so the expression differs from then on, as it should).
    a, b, anchor = clip
    first = lambda **kw: _motion(model, a[:SPF], b[:SPF], anchor, 3, steps=1, **kw)[0]
    shared = first(pose_guidance=1.0)
    only_all = first(guidance={"self": 0, "other": 0})
    for s in (0.0, 0.5):
        mixed = first(pose_guidance=s)
        assert np.abs(mixed[EXPRESSION] - shared[EXPRESSION]).max() <= 1e-6
        expected = s * shared[POSE_SLICE] + (1 - s) * only_all[POSE_SLICE]
        assert np.abs(mixed[POSE_SLICE] - expected).max() <= 1e-6
    assert np.abs(shared[POSE_SLICE] - only_all[POSE_SLICE]).max() > 1e-4  # the test can see a change
    # Over a whole clip the pose changes and the rollout stays finite.
    full = _motion(model, a, b, anchor, 3, pose_guidance=0.0)
    assert np.isfinite(full).all()
    assert np.abs(full - _motion(model, a, b, anchor, 3, pose_guidance=1.0)).max() > 1e-4


@pytest.mark.parametrize("pose_guidance", [0.25, {"self": 0}])
def test_batch_frame_step_and_streaming_equal_offline(model, clip, pose_guidance):
    a, b, anchor = clip
    offline = _motion(model, a, b, anchor, 11, steps=5, pose_guidance=pose_guidance)
    assert np.abs(offline - _motion(model, a, b, anchor, 11, steps=5, pose_guidance=1.0)).max() > 1e-4
    # Batched offline: each row as alone.
    items = [(a, b, anchor, 11), (b[: 20 * SPF], a, anchor_frame(9), 2)]
    together = generate_motions(model, items, sampling=_sampling(5, pose_guidance=pose_guidance))
    assert np.abs(together[0] - offline).max() <= 1e-5
    alone = _motion(model, *items[1][:3], 2, steps=5, pose_guidance=pose_guidance)
    assert np.abs(together[1] - alone).max() <= 1e-5
    # Streaming, in uneven chunks.
    session = StreamingSession(model, anchor, seed=11, sampling=_sampling(5, pose_guidance=pose_guidance))
    rng = np.random.default_rng(1)
    cuts = np.sort(rng.choice(np.arange(1, len(a)), 25, replace=False))
    sizes = np.diff(np.concatenate([[0], cuts, [len(a)]])).tolist()
    out = feed_interleaved(session, a, b, sizes, sizes[::-1], rng)
    assert [f.index for f in out] == list(range(len(offline)))
    assert np.abs(np.stack([f.motion for f in out]) - offline).max() <= 1e-5
    # The frame step fed audio slices (the CUDA-graph path, eager on CPU) against features of
    # the whole clip.
    frames = 12
    with torch.inference_mode():
        step = FrameStep(model, [anchor], [11], _sampling(3, pose_guidance=pose_guidance))
        features = encode_clip(model, a, b, frames)
        reference = FrameStep(model, [anchor], [11], _sampling(3, pose_guidance=pose_guidance))
        front = model.cfg.front_left_samples
        padded = [np.concatenate([np.zeros(front, np.float32), x, np.zeros(4 * SPF, np.float32)]) for x in (a, b)]
        for t in range(frames):
            for buffer, audio in zip(step.audio, padded):
                buffer[0] = torch.from_numpy(audio[t * SPF: t * SPF + buffer.shape[1]])
            expected = reference.sample(features[0][:, t], features[1][:, t])
            assert float((step()[0] - expected[0]).abs().max()) <= 1e-5


@pytest.mark.parametrize("bad, message", [
    (-0.1, "scale in \\[0, 1\\]"), (1.5, "scale in \\[0, 1\\]"), (math.nan, "scale in \\[0, 1\\]"),
    ("0.5", "scale in \\[0, 1\\]"), (True, "scale in \\[0, 1\\]"),
    ({"audio": 1.0}, "unknown pose guidance branch"), ({"self": "x"}, "must be a number"),
    ({"other": math.inf}, "must be finite"),
])
def test_bad_pose_guidance_is_an_input_error(model, clip, bad, message):
    with pytest.raises(InputError, match=message):
        plan_guidance(None, bad)
    a, b, anchor = clip
    with pytest.raises(InputError, match=message):
        Sampling(pose_guidance=bad)


def test_a_scale_below_one_needs_the_all_branch():
    with pytest.raises(InputError, match='"all" branch.*weight is 0'):
        plan_guidance({"all": 0.0}, 0.5)
    assert plan_guidance({"all": 0.0}, 1.0).pose_weights is None  # s = 1 asks nothing of "all"
    # A dict names its weights outright: no "all" needed.
    assert plan_guidance({"all": 0.0}, {"self": 0.0}).pose_weights == (0.0, 0.0, 0.5)


def test_default_plan_and_command_line_parsing(model, clip):
    default = plan_guidance()
    assert default == plan_guidance(pose_guidance=DEFAULT_POSE_GUIDANCE)
    assert default.branches == ("none", "self", "other", "all")  # no extra branch: same cost per frame
    assert default.weights == (0.0, 0.5, 0.5, 1.0) and default.pose_weights == (0.0, 0.0, 0.7, 0.75)
    # Guidance of one's own without a pose guidance guides the pose alike, as it always did.
    for weights in ({"self": 1.0, "other": 0.0, "all": 0.5}, {"self": 0, "other": 0}, {"all": 0.0}):
        assert plan_guidance(weights).pose_weights is None
    assert plan_guidance({"self": 0, "other": 0}).branches == ("all",)
    a, b, anchor = clip
    offline = _motion(model, a, b, anchor, 2, steps=2)
    assert np.array_equal(offline, _motion(model, a, b, anchor, 2, steps=2, pose_guidance=DEFAULT_POSE_GUIDANCE))
    assert np.abs(offline - _motion(model, a, b, anchor, 2, steps=2, pose_guidance=1.0)).max() > 1e-4
    assert parse_pose_guidance(None) is None
    assert parse_pose_guidance("0.25") == 0.25
    assert parse_pose_guidance('{"self": 0}') == {"self": 0}
    for text in ("half", "[0.5]", "{self: 0}"):
        with pytest.raises(InputError, match="--pose-guidance"):
            parse_pose_guidance(text)


def test_command_line_guidance_keeps_the_default_pose_guidance(model, clip):
    from dystream.generator.guidance import command_line_guidance, parse_guidance

    assert parse_guidance(None) is None
    assert parse_guidance('{"self": 1.5}') == {"self": 1.5}
    for text, message in (("1.5", "--guidance must be a JSON dict"), ('{"lips": 1}', "unknown guidance branch"),
                          ('{"self": "x"}', "must be a number")):
        with pytest.raises(InputError, match=message):
            parse_guidance(text)
    assert command_line_guidance(None, None) == (None, None)
    guidance, pose = command_line_guidance('{"self": 1.5}', None)
    assert guidance == {"self": 1.5} and pose == DEFAULT_POSE_GUIDANCE
    # The expression takes the new weight, the pose the default's (self 0, other 0.7, all 0.75).
    plan = plan_guidance(guidance, pose)
    assert plan.weights == (0.0, 1.5, 0.5, 1.0) and plan.pose_weights == (0.0, 0.0, 0.7, 0.75)
    assert command_line_guidance('{"self": 1.5}', "1") == ({"self": 1.5}, 1.0)
    a, b, anchor = clip
    crisp = _motion(model, a, b, anchor, 2, steps=2, guidance=guidance, pose_guidance=pose)
    default = _motion(model, a, b, anchor, 2, steps=2)
    assert np.abs(crisp[:, EXPRESSION] - default[:, EXPRESSION]).max() > 1e-4


@pytest.mark.parametrize("flag, for_generate, generate_error, for_evaluate, evaluate_error", [
    ("--pose-guidance", "2", "pose guidance must be a scale in [0, 1]", "x", "--pose-guidance must be"),
    ("--guidance", '{"lips": 2}', "unknown guidance branch", "2", "--guidance must be a JSON dict"),
])
def test_cli_rejects_bad_guidance_before_any_work(tmp_path, capsys, flag, for_generate, generate_error,
                                                  for_evaluate, evaluate_error):
    from importlib import resources

    photo = str(resources.files("dystream") / "assets" / "astronaut.png")
    assert main(["generate", "--photo", photo, "--self-audio", photo, flag, for_generate,
                 "-o", str(tmp_path / "o.mp4")]) == 2
    assert generate_error in capsys.readouterr().err
    assert main(["evaluate", "--data", str(tmp_path), flag, for_evaluate]) == 2
    assert evaluate_error in capsys.readouterr().err
