"""The motion rules on real phone timing: flite speech through the data engine."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from dystream.cli import main
from dystream.data.schema import iter_conversations
from dystream.evaluation import evaluate, ground_truth_predictor
from dystream.metrics import events as ev
from dystream.motion import idx

pytestmark = pytest.mark.tts
FPS = 25
OPEN_VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay")


@pytest.fixture(scope="module")
def flite_data(tmp_path_factory):
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite)")
    root = tmp_path_factory.mktemp("flite") / "data"
    assert main(["data", "synth", "--hours", "0.02", "-o", str(root), "--seed", "3",
                 "--workers", "1", "--engines", "flite", "--long-test-conversations", "0",
                 "--split-hours", "train=0.9,val=0,test=0.1",
                 "--quiet"]) == 0
    return list(iter_conversations(root, "train"))


def test_rules_hold_on_flite_speech(flite_data):
    offsets, closed, bilabials = [], 0, 0
    for conv in flite_data:
        for party in range(2):
            motion, labels = conv.motion[party], conv.labels[party]
            c, t = ev.bilabial_closure_counts(motion, labels.phones)
            closed, bilabials = closed + c, bilabials + t
            jaw = motion[:, idx("jawOpen")]
            for phone, start, end in labels.phones:
                if phone in OPEN_VOWELS and end - start >= 0.08:
                    nucleus = int(math.floor(0.5 * (start + end) * FPS))
                    a, b = int(math.floor(start * FPS)) - 1, int(math.ceil(end * FPS)) + 1
                    offsets.append(a + int(np.argmax(jaw[a:b])) - nucleus)
    assert bilabials > 20 and closed == bilabials
    offsets = np.abs(np.array(offsets))
    assert len(offsets) > 30
    assert np.mean(offsets <= 1) >= 0.93, np.bincount(offsets)


def test_ground_truth_scores_perfectly_on_flite_speech(flite_data):
    result = evaluate(flite_data, ground_truth_predictor)
    assert result["scores"]["jaw_open_correlation"] == pytest.approx(1.0)
    checks = result["vs_ground_truth"]["checks"]
    assert all(v for k, v in checks.items() if k != "pose_drift_degrees")
    assert result["data"]["nod_detection_recall"] > 0.85
