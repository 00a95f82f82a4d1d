"""The training-only phone probe (GeneratorConfig.phone_weight): frame labels, the loss,
and training with it from scratch and on top of trained weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dystream.cli import main as cli_main
from dystream.config import SAMPLES_PER_FRAME
from dystream.generator.config import PHONE_CLASS_COUNT, preset
from dystream.generator.inference import generate_motion
from dystream.generator.model import Generator
from dystream.generator.weights import load_generator, save_weights
from dystream.motion import MOTION_DIM
from dystream.training.dataset import PHONE_CLASSES, WindowBank, frame_phone_classes, load_conversations
from dystream.training.trainer import read_log
from test_training_generator import TINY
from test_training_standin import make_dataset

PAU, M, AA = (PHONE_CLASSES.index(p) for p in ("pau", "m", "aa"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"))


def test_frame_classes_follow_the_phone_at_each_frame_centre():
    assert len(PHONE_CLASSES) == PHONE_CLASS_COUNT == 40 and "pau" in PHONE_CLASSES
    # frame k's centre is (k + 0.5) / 25 s: 0.02, 0.06, 0.10, ...
    phones = [["pau", 0.0, 0.1], ["M", 0.1, 0.2], ["AA1", 0.2, 0.35], ["xx", 0.5, 0.6]]
    classes = frame_phone_classes(phones, 16)
    assert classes.dtype == np.int8
    assert classes[:2].tolist() == [PAU, PAU]
    assert classes[2:5].tolist() == [M, M, M]            # centres 0.10, 0.14, 0.18 lie in [0.1, 0.2)
    assert classes[5:9].tolist() == [AA] * 4             # stress digit dropped; 0.34 < 0.35
    assert classes[9:12].tolist() == [PAU] * 3           # between phones: silence
    assert classes[12:15].tolist() == [-1] * 3           # not ARPAbet: unknown, skipped by the loss
    assert classes[15] == PAU
    assert frame_phone_classes([], 5).tolist() == [-1] * 5   # no labels (real video): all unknown


def test_window_bank_gathers_the_self_party_phones(dataset):
    conversations = load_conversations(dataset, "train")
    bank = WindowBank(conversations, 8, 640, 640)
    window, party = torch.tensor([0, 3]), torch.tensor([1, 0])
    phones = bank.gather_phones(window, party)
    assert phones.shape == (2, 8) and phones.dtype == torch.int64
    first = conversations[0]
    expected = frame_phone_classes(first.labels[1].phones, first.num_frames)[:8]
    assert phones[0].tolist() == expected.tolist()
    expected = frame_phone_classes(first.labels[0].phones, first.num_frames)[3:11]
    assert phones[1].tolist() == expected.tolist()
    batch = bank.sample(4, torch.Generator().manual_seed(0))
    assert batch.phones.shape == (4, 8) and int(batch.phones.min()) >= 0   # the stand-in data is fully labelled


def _batch(model, frames=10, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    left, right = model.audio_context()
    n = left + frames * SAMPLES_PER_FRAME + right
    audio = torch.randn(batch, n, generator=g) * 0.1
    motion = torch.rand(batch, frames, MOTION_DIM, generator=g) * 0.2
    return audio, audio.flip(0), motion, motion[:, -1], torch.ones(batch, dtype=torch.bool)


def test_phone_loss_trains_the_probe_and_the_self_encoder_only():
    torch.manual_seed(0)
    model = Generator(preset("small", **TINY, phone_weight=0.5))
    assert model.wants_phones and model.phone_probe.out_features == PHONE_CLASS_COUNT
    plain = Generator(preset("small", **TINY))
    assert model.parameter_counts()["total"] == plain.parameter_counts()["total"]   # the probe is not the model
    args = _batch(model)
    phones = torch.randint(PHONE_CLASS_COUNT, (3, 10), generator=torch.Generator().manual_seed(1))
    loss, stats = model.training_loss(*args, generator=torch.Generator().manual_seed(2), phones=phones)
    assert stats["phone_ce"] > 0 and 0 <= stats["phone_acc"] <= 1
    without, stats_without = model.training_loss(*args, generator=torch.Generator().manual_seed(2))
    assert "phone_ce" not in stats_without
    assert float((loss - without).detach()) == pytest.approx(0.5 * stats["phone_ce"], rel=1e-4)
    # The probe's own gradient reaches the self encoder but not the partner's.
    model.zero_grad()
    model._phone_loss(model.self_encoder(args[0], 10), phones)[0].backward()
    assert model.phone_probe.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.self_encoder.parameters())
    assert all(p.grad is None for p in model.other_encoder.parameters())
    # Unknown frames (-1) do not count: all unknown gives zero loss and no gradient.
    model.zero_grad()
    ce, acc = model._phone_loss(model.self_encoder(args[0], 10), torch.full((3, 10), -1))
    ce.backward()
    assert float(ce.detach()) == 0.0 and float(acc) == 0.0 and model.phone_probe.weight.grad.abs().sum() == 0


def test_probe_does_not_change_inference(tmp_path):
    torch.manual_seed(0)
    probed = Generator(preset("small", **TINY, phone_weight=0.1)).eval()
    plain = Generator(preset("small", **TINY)).eval()
    plain.load_state_dict({k: v for k, v in probed.state_dict().items() if not k.startswith("phone_probe.")})
    path = save_weights(probed, tmp_path / "probed.safetensors", {})
    loaded = load_generator(path)
    assert loaded.cfg.phone_weight == 0.1 and loaded.wants_phones
    audio = np.random.default_rng(0).standard_normal(8 * SAMPLES_PER_FRAME).astype(np.float32) * 0.1
    anchor = np.zeros(MOTION_DIM, np.float32)
    a = generate_motion(loaded, audio, audio[::-1].copy(), anchor, seed=3)
    b = generate_motion(plain, audio, audio[::-1].copy(), anchor, seed=3)
    np.testing.assert_array_equal(a, b)


def test_cli_adds_the_phone_probe_on_top_of_trained_weights(dataset, tmp_path, caplog):
    torch.manual_seed(3)
    source = Generator(preset("small", **TINY))
    weights = save_weights(source, tmp_path / "pretrained.safetensors", {"preset": "small", "steps": 50})
    run_dir = tmp_path / "run"
    common = ["train", "generator", "--data", str(dataset), "-o", str(run_dir), "--device", "cpu", "--no-progress",
              "--batch-size", "2", "--warmup-steps", "1", "--val-every", "2", "--val-batches", "1",
              "--log-every", "1", "--lr-schedule", "constant", "--export-dtype", "float32"]
    assert cli_main([*common, "--max-steps", "2", "--init-weights", str(weights),
                     "--model-option", "phone_weight=0.2", "--model-option", "width=32"]) == 0
    assert "training-only" in caplog.text                         # width is not: ignored, with a warning
    tuned = load_generator(run_dir / "generator_ema.safetensors")
    assert tuned.cfg.phone_weight == 0.2 and tuned.cfg.width == 16
    train_records = [r for r in read_log(run_dir) if r["kind"] == "train"]
    assert len(train_records) == 2 and all(r["last_step_stats"]["phone_ce"] > 0 for r in train_records)
    # Resume rebuilds the same model (probe included) from the run's record.
    assert cli_main([*common, "--max-steps", "3", "--resume"]) == 0
    assert [r["step"] for r in read_log(run_dir) if r["kind"] == "train"] == [1, 2, 3]
    record = json.loads((run_dir / "training_record.json").read_text())
    assert record["model_options"]["phone_weight"] == "0.2"
    # Trained on again with the probe off: the probe's weights in the file are dropped.
    assert cli_main(["train", "generator", "--data", str(dataset), "-o", str(tmp_path / "run2"), "--device", "cpu",
                     "--no-progress", "--batch-size", "2", "--max-steps", "1", "--warmup-steps", "1",
                     "--init-weights", str(run_dir / "generator_ema.safetensors"),
                     "--model-option", "phone_weight=0"]) == 0
    assert not load_generator(tmp_path / "run2" / "generator_ema.safetensors").wants_phones
