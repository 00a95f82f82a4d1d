"""The training objective: the flow-matching loss of the recipe, its auxiliary heads (future
probe, phone probe, voice adversary), and that none of it is part of the exported network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dystream.config import SAMPLES_PER_FRAME
from dystream.generator.offline import generate_motion
from dystream.generator.weights import load_generator, save_weights
from dystream.motion import MOTION_DIM
from dystream.training.dataset import PHONE_CLASSES, WindowBank, WindowBatch, frame_phone_classes, load_conversations
from dystream.training.recipe import (PHONE_CLASS_COUNT, VOICE_CLASS_COUNT, GeneratorObjective, TrainingRecipe,
                                      _ReverseGradient)
from generator_helpers import anchor_frame, speech_like, tiny_generator
from test_training_standin import make_dataset

PAU, M, AA = (PHONE_CLASSES.index(p) for p in ("pau", "m", "aa"))
NO_HEADS = TrainingRecipe.paper()


def _batch(network, batch=3, frames=12, seed=0) -> WindowBatch:
    left, right = network.audio_context()
    g = torch.Generator().manual_seed(seed)
    n = left + frames * SAMPLES_PER_FRAME + right
    audio = 0.1 * torch.randn(batch, n, generator=g)
    motion = 0.1 * torch.randn(batch, frames, MOTION_DIM, generator=g)
    keep = torch.arange(batch) % 2 == 0  # one sample without anchor: the null anchor is used too
    phones = torch.randint(PHONE_CLASS_COUNT, (batch, frames), generator=g)
    return WindowBatch(audio, audio.flip(0), motion, motion[:, -1], keep, phones, 35 * torch.arange(batch))


def _objective(recipe=TrainingRecipe(), **sizes) -> GeneratorObjective:
    return GeneratorObjective(tiny_generator(**sizes), recipe).train()


@pytest.mark.parametrize("recipe, sizes", [(NO_HEADS, {}), (TrainingRecipe(), {"pose_relative": True,
                                                                             "front_warps": (0.85, 1.0, 1.2)})])
def test_the_loss_is_finite_reaches_every_parameter_and_checks_shapes(recipe, sizes):
    objective = _objective(recipe, **sizes)
    # 8 windows x 11 frames per stream: the per-frame audio dropout (p=0.1) drops some frame of
    # each stream for certain in practice (P(none) = 0.9^88 ~ 1e-4); the draws are seeded.
    loss, stats = objective(_batch(objective.network, batch=8), generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and loss.dim() == 0
    assert set(stats) >= {"loss", "mse", "mse_last"} and all(torch.is_tensor(v) and v.dim() == 0 for v in stats.values())
    heads = {"future_mse", "phone_ce", "voice_ce"}
    assert heads <= set(stats) if recipe.phone_weight else not heads & set(stats)
    loss.backward()
    no_grad = [n for n, p in objective.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert no_grad == []
    bad = _batch(objective.network)
    bad.self_audio = bad.self_audio[:, :-1]
    with pytest.raises(ValueError, match="self_audio must be"):
        objective(bad)


def test_the_recipe_sets_dropout_and_the_network_carries_nothing_of_it(tmp_path):
    objective = _objective(TrainingRecipe(dropout=0.2))
    network = objective.network
    rates = {m.p for m in network.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {0.2}
    # The exported network holds no training-only tensor, and computes what it computed
    # before the objective wrapped it (the auxiliary heads are not part of it).
    path = save_weights(network, tmp_path / "w.safetensors", {})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert not [k for k in f.keys() if "probe" in k]
    plain = tiny_generator()
    audio = speech_like(8 * SAMPLES_PER_FRAME, 1)
    np.testing.assert_array_equal(generate_motion(load_generator(path), audio, None, anchor_frame()),
                                  generate_motion(plain.set_encoder_dtype(torch.float64), audio, None, anchor_frame()))
    assert network.parameter_counts()["total"] == plain.parameter_counts()["total"]


def test_the_loss_is_reproducible_with_a_generator_and_fits_a_fixed_batch():
    objective = _objective(NO_HEADS)
    batch = _batch(objective.network, batch=4, frames=10)
    torch.manual_seed(0)
    a, _ = objective(batch, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    b, _ = objective(batch, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    objective = _objective(TrainingRecipe.paper())
    for module in objective.network.modules():  # no dropout: the fit is then the noise draws' alone
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    opt = torch.optim.AdamW(objective.parameters(), lr=2e-3)
    losses = []
    for step in range(40):
        loss, _ = objective(batch, generator=torch.Generator().manual_seed(step % 4))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-4:]) < 0.6 * np.mean(losses[:4])


def test_every_parameter_is_in_the_graph_even_when_nothing_is_dropped():
    """DDP fails on parameters without gradient: null embeddings must join every step."""
    objective = _objective(TrainingRecipe(anchor_drop_prob=0.0, audio_drop_prob=0.0))
    batch = _batch(objective.network, batch=2)
    batch.anchor_keep = torch.ones(2, dtype=torch.bool)
    loss, _ = objective(batch)
    loss.backward()
    assert [n for n, p in objective.named_parameters() if p.grad is None] == []


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


def test_the_window_bank_gathers_the_self_party_phones_and_voice(tmp_path):
    dataset = make_dataset(tmp_path / "data")
    conversations = load_conversations(dataset, "train")
    bank = WindowBank(conversations, 8, 640, 640)
    window, party = torch.tensor([0, 3]), torch.tensor([1, 0])
    phones = bank.gather_phones(window, party)
    assert phones.shape == (2, 8) and phones.dtype == torch.int64
    first = conversations[0]
    assert phones[0].tolist() == frame_phone_classes(first.labels[1].phones, first.num_frames)[:8].tolist()
    assert phones[1].tolist() == frame_phone_classes(first.labels[0].phones, first.num_frames)[3:11].tolist()
    assert bank.voice_names == ["test_a", "test_b"]           # the stand-in data: party A, party B
    assert bank.gather_voices(torch.tensor([0, 3, 5]), torch.tensor([1, 0, 1])).tolist() == [1, 0, 1]
    batch = bank.sample(4, torch.Generator().manual_seed(0))
    assert batch.phones.shape == (4, 8) and int(batch.phones.min()) >= 0   # the stand-in data is fully labelled
    assert batch.voices.shape == (4,) and batch.voices.dtype == torch.int64


def test_the_phone_loss_trains_the_probe_and_the_self_encoder_only():
    objective = _objective(TrainingRecipe(future_frames=0, phone_weight=0.5, voice_adversary_weight=0.0))
    assert objective.phone_probe.out_features == PHONE_CLASS_COUNT
    batch = _batch(objective.network, frames=10)
    torch.manual_seed(5)  # the layers' dropout draws from the global generator
    loss, stats = objective(batch, generator=torch.Generator().manual_seed(2))
    assert stats["phone_ce"] > 0 and 0 <= stats["phone_acc"] <= 1
    batch.phones = None
    torch.manual_seed(5)
    without, stats_without = objective(batch, generator=torch.Generator().manual_seed(2))
    assert "phone_ce" not in stats_without
    assert float((loss - without).detach()) == pytest.approx(0.5 * float(stats["phone_ce"]), rel=1e-4)
    # The probe's own gradient reaches the self encoder but not the partner's.
    net = objective.network
    phones = torch.randint(PHONE_CLASS_COUNT, (3, 10), generator=torch.Generator().manual_seed(1))
    objective.zero_grad()
    objective._phone_loss(net.self_encoder(batch.self_audio, 10)[0], phones)[0].backward()
    assert objective.phone_probe.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.self_encoder.parameters())
    assert all(p.grad is None for p in net.other_encoder.parameters())
    # Unknown frames (-1) do not count: all unknown gives zero loss and no gradient.
    objective.zero_grad()
    ce, acc = objective._phone_loss(net.self_encoder(batch.self_audio, 10)[0], torch.full((3, 10), -1))
    ce.backward()
    assert float(ce.detach()) == 0.0 and float(acc) == 0.0 and objective.phone_probe.weight.grad.abs().sum() == 0


def test_the_reverse_gradient_is_the_identity_forward_and_minus_scale_backward():
    x = torch.randn(4, 3, requires_grad=True)
    y = _ReverseGradient.apply(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.3 * torch.arange(3.0).expand(4, 3))


def test_the_voice_adversary_adds_its_loss_and_pushes_only_the_self_encoder():
    objective = _objective(TrainingRecipe(future_frames=0, phone_weight=0.0, voice_adversary_weight=0.5))
    assert objective.voice_probe.out_features == VOICE_CLASS_COUNT
    batch = _batch(objective.network)  # voices 0, 35, 70: 70 is taken modulo the class count

    def grads(voices):
        objective.zero_grad()
        batch.voices = voices
        torch.manual_seed(5)  # the layers' dropout draws from the global generator
        loss, stats = objective(batch, generator=torch.Generator().manual_seed(2))
        loss.backward()
        return loss, stats, {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}

    loss, stats, with_voices = grads(torch.tensor([0, 35, 70]))
    without, stats_without, no_voices = grads(None)
    assert stats["voice_ce"] > 0 and 0 <= stats["voice_acc"] <= 1 and "voice_ce" not in stats_without
    assert float((loss - without).detach()) == pytest.approx(float(stats["voice_ce"]), rel=1e-4)
    assert with_voices["voice_probe.weight"].abs().sum() > 0 and "voice_probe.weight" not in no_voices
    for name, grad in no_voices.items():
        if name.startswith("network.self_encoder."):
            continue
        assert torch.allclose(with_voices[name], grad, atol=1e-7), name    # nothing else is pushed
    assert any(not torch.allclose(with_voices[n], no_voices[n]) for n in no_voices
               if n.startswith("network.self_encoder."))
    # Validation (eval mode) scores the flow loss alone.
    objective.eval()
    with torch.no_grad():
        batch.voices = torch.tensor([0, 35, 70])
        a, _ = objective(batch, generator=torch.Generator().manual_seed(2))
        batch.voices = None
        b, _ = objective(batch, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


def test_the_trainer_clips_the_adversary_apart_from_the_model(tmp_path, monkeypatch):
    from dystream.training import ddp, trainer as trainer_module
    from dystream.training.dataset import motion_statistics
    from dystream.training.trainer import Trainer, TrainOptions

    assert GeneratorObjective(tiny_generator(), NO_HEADS).adversary_parameters() == []
    objective = GeneratorObjective(tiny_generator(window=8), TrainingRecipe())
    probe = {id(p) for p in objective.voice_probe.parameters()}
    assert {id(p) for p in objective.adversary_parameters()} == probe and probe
    conversations = load_conversations(make_dataset(tmp_path / "data"), "train")
    objective.network.set_motion_stats(*motion_statistics(conversations))
    left, right = objective.audio_context()
    bank = WindowBank(conversations, objective.window_frames, left, right)
    options = TrainOptions(batch_size=3, lr=1e-3, warmup_steps=1, max_steps=1, grad_clip=1e-3)
    trainer = Trainer(objective, bank, None, options, tmp_path / "run", ddp.DistributedContext())
    clipped, norms, real_clip = [], [], torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm):
        parameters = list(parameters)
        clipped.append({id(p) for p in parameters})
        norms.append(float(real_clip(parameters, max_norm)))
        return torch.tensor(norms[-1])

    monkeypatch.setattr(trainer_module.torch.nn.utils, "clip_grad_norm_", recording_clip)
    trainer.train_step()
    everything = {id(p) for p in objective.parameters()}
    assert clipped == [everything - probe, probe]        # the model without the probe, then the probe
    assert all(n > 1e-3 for n in norms)                  # both were over the limit: both scaled alone
