"""Evaluation over a split: the ground truth scores perfectly, the RMS baseline worse,
and ``dystream evaluate`` runs end to end on a written dataset."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dystream.cli import main
from dystream.data.schema import write_shard
from dystream.errors import InputError
from dystream.evaluation import (evaluate, evaluate_many, ground_truth_predictor,
                                 rms_baseline_predictor)
from dystream.evaluation.toy import make_toy_conversation
from dystream.motion import MOTION_DIM


@pytest.fixture(scope="module")
def conversations():
    rng = np.random.default_rng(0)
    # One conversation of 5 minutes (drift is measured on those) and two short ones.
    return [make_toy_conversation(rng, seconds, conv_id=f"toy-{i}")
            for i, seconds in enumerate((300.0, 40.0, 40.0))]


def test_ground_truth_scores_perfectly(conversations):
    result = evaluate(conversations, ground_truth_predictor, seeds=(0, 1))
    scores, gt = result["scores"], result["ground_truth"]
    assert scores["jaw_open_correlation"] == pytest.approx(1.0)
    assert scores["bilabial_closure_rate"] == pytest.approx(1.0)
    for key in gt:
        assert scores[key] == pytest.approx(gt[key], nan_ok=True)
    cmp = result["vs_ground_truth"]
    assert cmp["bilabial_closure_vs_gt"] == pytest.approx(1.0)
    assert cmp["nod_rate_vs_gt"] == pytest.approx(1.0)
    assert cmp["offset_minus_gt_frames"] == 0
    assert cmp["nod_delay_minus_gt_s"] == 0
    assert all(cmp["checks"].values()), cmp["checks"]
    # The listening statistics are real: nods happen, a few hundred ms after phrase ends.
    assert 3.0 < gt["listening_nods_per_minute"] < 20.0
    assert 0.2 < gt["median_nod_delay_s"] < 0.55
    assert gt["pose_drift_degrees"] < 2.0
    assert result["data"]["long_conversations"] == 1
    assert result["data"]["nod_detection_recall"] > 0.9


def test_rms_baseline_is_worse(conversations):
    report = evaluate_many(conversations, {"gt": ground_truth_predictor,
                                           "rms": rms_baseline_predictor})
    gt, rms = report["gt"]["scores"], report["rms"]["scores"]
    assert rms["jaw_open_correlation"] < 0.8 < gt["jaw_open_correlation"]
    assert rms["bilabial_closure_rate"] < gt["bilabial_closure_rate"]
    assert rms["listening_nods_per_minute"] == 0.0
    assert math.isnan(rms["median_nod_delay_s"])
    assert rms["pose_drift_degrees"] > gt["pose_drift_degrees"]
    checks = report["rms"]["vs_ground_truth"]["checks"]
    assert checks["jaw_open_correlation"] is False
    assert checks["listening_nods_per_minute"] is False
    assert checks["median_nod_delay_s"] is None  # undefined without nods


def test_a_drifting_predictor_fails_the_drift_check(conversations):
    from dystream.motion import idx

    def drifting(conv, party, seed):
        motion = conv.motion[party].copy()
        ramp = np.linspace(0.0, math.radians(6.0), len(motion))
        motion[:, idx("yaw")] += ramp  # slowly turns away over the conversation
        return motion

    result = evaluate(conversations[:1], drifting)
    assert result["scores"]["pose_drift_degrees"] > 4.0
    assert result["vs_ground_truth"]["checks"]["pose_drift_degrees"] is False
    assert result["vs_ground_truth"]["checks"]["jaw_open_correlation"] is True


def test_bad_predictor_output_is_a_clear_error(conversations):
    with pytest.raises(InputError, match="expected"):
        evaluate(conversations[1:2], lambda conv, party, seed: np.zeros((10, MOTION_DIM + 2)))
    with pytest.raises(InputError, match="NaN"):
        evaluate(conversations[1:2],
                 lambda conv, party, seed: np.full((conv.num_frames, MOTION_DIM), np.nan))
    with pytest.raises(InputError, match="no conversations"):
        evaluate([], ground_truth_predictor)


def test_cli_writes_report_and_table(conversations, tmp_path, capsys):
    write_shard(tmp_path / "data" / "test" / "shard-00000.npz", conversations[1:])
    out = tmp_path / "report.json"
    assert main(["evaluate", "--data", str(tmp_path / "data"), "--split", "test",
                 "--no-model", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "jawOpen correlation" in printed and "RMS baseline" in printed
    report = json.loads(out.read_text())  # strict JSON: NaN written as null
    assert report["ground_truth"]["scores"]["jaw_open_correlation"] == pytest.approx(1.0)
    assert report["ground_truth"]["scores"]["pose_drift_degrees"] is None  # no 5-minute conversation
    assert report["data"]["conversations"] == 2
    # --max-hours stops once that much conversation has been scored.
    assert main(["evaluate", "--data", str(tmp_path / "data"), "--no-model", "--max-hours", "0.001",
                 "-o", str(out)]) == 0
    assert json.loads(out.read_text())["data"]["conversations"] == 1


def test_cli_bad_input(tmp_path, capsys):
    assert main(["evaluate", "--data", str(tmp_path / "missing")]) == 2
    assert "dystream data synth" in capsys.readouterr().err
    (tmp_path / "empty" / "test").mkdir(parents=True)
    assert main(["evaluate", "--data", str(tmp_path / "empty"), "--no-model"]) == 2
    assert "no shards" in capsys.readouterr().err


def test_cli_scores_a_generator_checkpoint(conversations, tmp_path, capsys):
    """The model column: an untrained tiny generator through the real inference path."""
    torch = pytest.importorskip("torch")
    from dystream.generator.config import preset
    from dystream.generator.model import Generator
    from dystream.generator.weights import save_weights

    torch.manual_seed(0)
    cfg = preset("small", width=64, layers=1, heads=2, audio_width=32, audio_layers=1,
                 head_width=32, head_blocks=1)
    weights = save_weights(Generator(cfg), tmp_path / "tiny.safetensors", {"note": "untrained"})
    short = make_toy_conversation(np.random.default_rng(5), 5.0, conv_id="short")
    write_shard(tmp_path / "data" / "test" / "shard-00000.npz", [short])
    out = tmp_path / "report.json"
    assert main(["evaluate", "--data", str(tmp_path / "data"), "--checkpoint", str(weights),
                 "--seeds", "0", "1", "--steps", "2", "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["model"]["per_seed"]) == 2
    assert "model" in capsys.readouterr().out
    from dystream.generator.guidance import DEFAULT_POSE_GUIDANCE

    assert report["settings"]["pose_guidance"] == DEFAULT_POSE_GUIDANCE
    assert main(["evaluate", "--data", str(tmp_path / "data"), "--checkpoint", str(weights),
                 "--steps", "2", "--pose-guidance", "1", "-o", str(out)]) == 0
    paper_pose = json.loads(out.read_text())
    assert paper_pose["settings"]["pose_guidance"] == 1.0
    assert paper_pose["settings"]["guidance"] == {"self": 0.5, "other": 0.5, "anchor": 0.0, "all": 1.0}
    assert main(["evaluate", "--data", str(tmp_path / "data"), "--checkpoint", str(weights),
                 "--steps", "2", "--guidance", '{"self": 1.5}', "-o", str(out)]) == 0
    crisp = json.loads(out.read_text())["settings"]
    assert crisp["guidance"]["self"] == 1.5 and crisp["pose_guidance"] == DEFAULT_POSE_GUIDANCE
