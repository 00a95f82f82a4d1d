"""The training-only voice adversary (GeneratorConfig.voice_adversary_weight): voice labels
from the window bank, the reversed gradient, and training with it on top of trained weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dystream.cli import main as cli_main
from dystream.config import SAMPLES_PER_FRAME
from dystream.generator.config import VOICE_CLASS_COUNT, preset
from dystream.generator.inference import generate_motion
from dystream.generator.model import Generator, _ReverseGradient
from dystream.generator.weights import load_generator, save_weights
from dystream.motion import MOTION_DIM
from dystream.training.dataset import WindowBank, load_conversations
from dystream.training.trainer import read_log
from test_phone_probe import _batch
from test_training_generator import TINY
from test_training_standin import make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"))


def test_window_bank_gathers_the_self_party_voice(dataset):
    bank = WindowBank(load_conversations(dataset, "train"), 8, 640, 640)
    assert bank.voice_names == ["test_a", "test_b"]           # the stand-in data: party A, party B
    window, party = torch.tensor([0, 3, 5]), torch.tensor([1, 0, 1])
    assert bank.gather_voices(window, party).tolist() == [1, 0, 1]
    batch = bank.sample(6, torch.Generator().manual_seed(0))
    assert batch.voices.shape == (6,) and batch.voices.dtype == torch.int64


def test_reverse_gradient_is_the_identity_forward_and_minus_scale_backward():
    x = torch.randn(4, 3, requires_grad=True)
    y = _ReverseGradient.apply(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.3 * torch.arange(3.0).expand(4, 3))


def test_voice_adversary_adds_its_loss_and_pushes_only_the_self_encoder():
    torch.manual_seed(0)
    model = Generator(preset("small", **TINY, voice_adversary_weight=0.5)).train()
    assert model.wants_voices and model.voice_probe.out_features == VOICE_CLASS_COUNT
    plain = Generator(preset("small", **TINY))
    assert model.parameter_counts()["total"] == plain.parameter_counts()["total"]   # not part of the model
    args, voices = _batch(model), torch.tensor([0, 1, 70])    # 70: taken modulo the class count

    def grads(**extra):
        model.zero_grad()
        torch.manual_seed(5)  # the layers' dropout draws from the global generator
        loss, stats = model.training_loss(*args, generator=torch.Generator().manual_seed(2), **extra)
        loss.backward()
        return loss, stats, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss, stats, with_voices = grads(voices=voices)
    without, stats_without, no_voices = grads()
    assert stats["voice_ce"] > 0 and 0 <= stats["voice_acc"] <= 1 and "voice_ce" not in stats_without
    assert float((loss - without).detach()) == pytest.approx(stats["voice_ce"], rel=1e-4)
    assert with_voices["voice_probe.weight"].abs().sum() > 0 and "voice_probe.weight" not in no_voices
    for name, grad in no_voices.items():
        if name.startswith("self_encoder."):
            continue
        assert torch.allclose(with_voices[name], grad, atol=1e-7), name    # nothing else is pushed
    assert any(not torch.allclose(with_voices[n], no_voices[n]) for n in no_voices if n.startswith("self_encoder."))
    # Validation (eval mode) scores the flow loss alone.
    model.eval()
    with torch.no_grad():
        a, _ = model.training_loss(*args, generator=torch.Generator().manual_seed(2), voices=voices)
        b, _ = model.training_loss(*args, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


def test_voice_adversary_does_not_change_inference(tmp_path):
    torch.manual_seed(0)
    adversary = Generator(preset("small", **TINY, voice_adversary_weight=0.1)).eval()
    plain = Generator(preset("small", **TINY)).eval()
    plain.load_state_dict({k: v for k, v in adversary.state_dict().items() if not k.startswith("voice_probe.")})
    loaded = load_generator(save_weights(adversary, tmp_path / "adversary.safetensors", {}))
    audio = np.random.default_rng(0).standard_normal(8 * SAMPLES_PER_FRAME).astype(np.float32) * 0.1
    anchor = np.zeros(MOTION_DIM, np.float32)
    np.testing.assert_array_equal(generate_motion(loaded, audio, audio[::-1].copy(), anchor, seed=3),
                                  generate_motion(plain, audio, audio[::-1].copy(), anchor, seed=3))


def test_cli_trains_the_voice_adversary_on_top_of_trained_weights(dataset, tmp_path):
    torch.manual_seed(3)
    weights = save_weights(Generator(preset("small", **TINY)), tmp_path / "pretrained.safetensors",
                           {"preset": "small", "steps": 50})
    run_dir = tmp_path / "run"
    assert cli_main(["train", "generator", "--data", str(dataset), "-o", str(run_dir), "--device", "cpu",
                     "--no-progress", "--batch-size", "2", "--warmup-steps", "1", "--val-every", "2",
                     "--val-batches", "1", "--log-every", "1", "--max-steps", "2", "--init-weights", str(weights),
                     "--model-option", "voice_adversary_weight=0.1"]) == 0
    train_records = [r for r in read_log(run_dir) if r["kind"] == "train"]
    assert len(train_records) == 2 and all(r["last_step_stats"]["voice_ce"] > 0 for r in train_records)
    assert load_generator(run_dir / "generator_ema.safetensors").cfg.voice_adversary_weight == 0.1


def test_trainer_clips_the_adversary_apart_from_the_model(dataset, tmp_path, monkeypatch):
    from dystream.training import ddp, trainer as trainer_module
    from dystream.training.dataset import motion_statistics
    from dystream.training.trainer import Trainer, TrainOptions

    assert Generator(preset("small", **TINY)).adversary_parameters() == []
    model = Generator(preset("small", **TINY, voice_adversary_weight=0.1))
    probe = {id(p) for p in model.voice_probe.parameters()}
    assert {id(p) for p in model.adversary_parameters()} == probe and probe
    conversations = load_conversations(dataset, "train")
    model.set_motion_stats(*motion_statistics(conversations))
    left, right = model.audio_context()
    bank = WindowBank(conversations, model.cfg.window, left, right)
    options = TrainOptions(batch_size=3, lr=1e-3, warmup_steps=1, max_steps=1, grad_clip=1e-3)
    trainer = Trainer(model, bank, None, options, tmp_path / "run", ddp.DistributedContext())
    clipped, norms, real_clip = [], [], torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm):
        parameters = list(parameters)
        clipped.append({id(p) for p in parameters})
        norms.append(float(real_clip(parameters, max_norm)))
        return torch.tensor(norms[-1])

    monkeypatch.setattr(trainer_module.torch.nn.utils, "clip_grad_norm_", recording_clip)
    trainer.train_step()
    everything = {id(p) for p in model.parameters()}
    assert clipped == [everything - probe, probe]        # the model without the probe, then the probe
    assert all(n > 1e-3 for n in norms)                  # both were over the limit: both scaled alone
