"""Training the real generator (a tiny config of it): exact resume, CLI, export that loads back."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dystream.cli import main as cli_main
from dystream.generator.config import preset
from dystream.generator.model import Generator
from dystream.generator.weights import load_generator, read_metadata, save_weights
from dystream.training import ddp
from dystream.training.checkpoint import load_checkpoint
from dystream.training.dataset import WindowBank, load_conversations, motion_statistics
from dystream.training.trainer import Trainer, TrainOptions, read_log
from test_training_standin import make_dataset

TINY = {"n_mels": 16, "audio_width": 16, "audio_layers": 1, "width": 16, "layers": 1, "heads": 2,
        "head_width": 16, "head_blocks": 1, "window": 12, "self_lookahead_ms": 40, "other_lookahead_ms": 20}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


def _trainer(dataset, run_dir, max_steps):
    torch.manual_seed(7)
    model = Generator(preset("small", **TINY))
    conversations = load_conversations(dataset, "train")
    model.set_motion_stats(*(torch.from_numpy(a) for a in motion_statistics(conversations)))
    left, right = model.audio_context()
    bank = WindowBank(conversations, model.cfg.window, left, right)
    val_bank = WindowBank(load_conversations(dataset, "val"), model.cfg.window, left, right)
    options = TrainOptions(batch_size=3, lr=2e-3, warmup_steps=2, max_steps=max_steps, val_every=3,
                           val_batches=1, ckpt_every=100, log_every=1, progress=False)
    return Trainer(model, bank, val_bank, options, run_dir, ddp.DistributedContext())


def test_real_generator_resumes_exactly(dataset, tmp_path):
    straight = _trainer(dataset, tmp_path / "straight", 6)
    straight.fit()
    first = _trainer(dataset, tmp_path / "resumed", 6)
    first.fit(interrupt_after=4)
    resumed = _trainer(dataset, tmp_path / "resumed", 6)
    resumed.load_state_dict(load_checkpoint(tmp_path / "resumed"))
    resumed.fit()

    def losses(run):
        return [(r["step"], r["loss"]) for r in read_log(tmp_path / run) if r["kind"] == "train"]

    assert len(losses("straight")) == 6 and losses("resumed") == losses("straight")
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)


def test_cli_trains_the_real_generator_and_the_export_loads(dataset, tmp_path):
    run_dir = tmp_path / "run"
    options = [arg for name, value in TINY.items() if "lookahead" not in name
               for arg in ("--model-option", f"{name}={value}")]
    assert cli_main(["train", "generator", "--data", str(dataset), "-o", str(run_dir), "--device", "cpu",
                     "--no-progress", "--batch-size", "2", "--max-steps", "4", "--warmup-steps", "1",
                     "--val-every", "2", "--val-batches", "1", "--log-every", "1", "--lookahead-ms", "30",
                     *options]) == 0
    model = load_generator(run_dir / "generator_ema.safetensors")
    assert model.cfg.self_lookahead_ms == 30 == model.cfg.other_lookahead_ms and model.cfg.window == 12
    info = json.loads(read_metadata(run_dir / "generator_ema.safetensors")["info"])
    assert info["steps"] == 4 and info["export_dtype"] == "float16" and info["train_hours"] > 0
    ema = load_checkpoint(run_dir)["ema"]
    # The export is the EMA, rounded to fp16; the motion statistics stay exact.
    for name, value in model.state_dict().items():
        expected = ema[name] if name.startswith("motion_") else ema[name].half().float()
        assert torch.equal(value, expected), name
    stats = motion_statistics(load_conversations(dataset, "train"))
    # Channels modelled as they are carry the data's statistics; the pose channels of a
    # pose_relative model (the small preset's default) carry those of pose minus anchor,
    # which centre on zero and spread less than the absolute pose.
    absolute = model.relative_mask == 0
    assert bool(model.cfg.pose_relative) == bool((~absolute).any())
    assert torch.allclose(model.motion_mean[absolute], torch.from_numpy(stats[0])[absolute])
    assert torch.allclose(model.motion_std[absolute], torch.from_numpy(stats[1])[absolute])
    if model.cfg.pose_relative:
        assert torch.all(model.motion_std[~absolute] < torch.from_numpy(stats[1])[~absolute])
        assert torch.all(model.motion_mean[~absolute].abs() < 0.5 * model.motion_std[~absolute])
    assert [r["step"] for r in read_log(run_dir) if r["kind"] == "train"] == [1, 2, 3, 4]


def test_cli_rejects_a_lookahead_off_the_mel_hop(dataset, tmp_path, capsys):
    assert cli_main(["train", "generator", "--data", str(dataset), "-o", str(tmp_path / "run"),
                     "--device", "cpu", "--max-steps", "1", "--lookahead-ms", "25"]) == 2
    assert "steps of 10 ms" in capsys.readouterr().err


def test_cli_fine_tunes_from_weights_and_resumes_the_same_model(dataset, tmp_path, capsys):
    """--init-weights: the run starts from the file's weights, architecture (here a tiny,
    non-preset one) and motion statistics; its record rebuilds that model on --resume."""
    torch.manual_seed(3)
    source = Generator(preset("small", **TINY))
    mean, std = torch.linspace(-1, 1, source.motion_mean.numel()), torch.linspace(0.5, 2, source.motion_std.numel())
    source.set_motion_stats(mean, std)                      # not the data's: must survive fine-tuning
    weights = tmp_path / "pretrained.safetensors"
    save_weights(source, weights, {"preset": "small", "steps": 123})
    run_dir = tmp_path / "run"
    common = ["train", "generator", "--data", str(dataset), "-o", str(run_dir), "--device", "cpu", "--no-progress",
              "--batch-size", "2", "--warmup-steps", "1", "--val-every", "2", "--val-batches", "1",
              "--lr-schedule", "constant", "--export-dtype", "float32"]
    assert cli_main([*common, "--max-steps", "2", "--init-weights", str(weights)]) == 0
    state = load_checkpoint(run_dir)
    assert state["record"]["init_weights_steps"] == 123
    assert state["record"]["model_options"]["width"] == "16"        # the file's architecture, not the preset's
    tuned = load_generator(run_dir / "generator_ema.safetensors")
    assert tuned.cfg == source.cfg
    assert torch.equal(tuned.motion_mean, mean) and torch.equal(tuned.motion_std, std)
    moved = [not torch.equal(a, b) for (name, a), b in zip(tuned.state_dict().items(), source.state_dict().values())
             if not name.startswith("motion_")]
    assert any(moved)                                                 # it trained
    # Started from the file: after 2 small steps the weights are still close to it (a fresh
    # random init of the same architecture is far from it).
    fresh = Generator(preset("small", **TINY))
    def distance(model):
        return sum(float((a - b).abs().sum()) for (name, a), b in
                   zip(model.state_dict().items(), source.state_dict().values()) if not name.startswith("motion_"))
    assert distance(tuned) < 0.1 * distance(fresh)
    assert cli_main([*common, "--max-steps", "3", "--resume"]) == 0
    resumed = load_checkpoint(run_dir)
    assert resumed["step"] == 3 and resumed["record"]["init_weights_steps"] == 123
    assert resumed["record"]["command"].endswith(f"--init-weights {weights}")
    assert cli_main([*common, "--max-steps", "3", "--resume", "--init-weights", str(weights)]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert cli_main([*common, "--max-steps", "1", "--init-weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_lengthens_the_lookahead_of_initial_weights(dataset, tmp_path, capsys):
    """--init-weights with --lookahead-ms: a longer lookahead than the file's is grown (zero
    weights on the new frames), a shorter one is refused."""
    torch.manual_seed(5)
    source = Generator(preset("small", **TINY))                      # 40 / 20 ms
    weights = tmp_path / "pretrained.safetensors"
    save_weights(source, weights, {"preset": "small", "steps": 50})
    common = ["train", "generator", "--data", str(dataset), "--device", "cpu", "--no-progress",
              "--batch-size", "2", "--warmup-steps", "1", "--val-every", "2", "--val-batches", "1",
              "--export-dtype", "float32", "--init-weights", str(weights)]
    run_dir = tmp_path / "run"
    assert cli_main([*common, "-o", str(run_dir), "--max-steps", "2", "--lookahead-ms", "60"]) == 0
    tuned = load_generator(run_dir / "generator_ema.safetensors")
    assert (tuned.cfg.self_lookahead_ms, tuned.cfg.other_lookahead_ms) == (60, 60)
    assert tuned.cfg == source.cfg.with_lookahead(60, 60)
    assert cli_main(["train", "generator", "--data", str(dataset), "-o", str(run_dir), "--device", "cpu",
                     "--no-progress", "--batch-size", "2", "--max-steps", "3", "--resume"]) == 0
    assert load_checkpoint(run_dir)["record"]["lookahead_ms"] == 60
    # Per stream, through --model-option; a shorter lookahead is a clear error.
    other_dir = tmp_path / "other"
    assert cli_main([*common, "-o", str(other_dir), "--max-steps", "1",
                     "--model-option", "other_lookahead_ms=50"]) == 0
    grown = load_generator(other_dir / "generator_ema.safetensors").cfg
    assert (grown.self_lookahead_ms, grown.other_lookahead_ms) == (40, 50)
    capsys.readouterr()
    assert cli_main([*common, "-o", str(tmp_path / "short"), "--max-steps", "1", "--lookahead-ms", "30"]) == 2
    assert "not shrink" in capsys.readouterr().err


def test_cli_deepens_the_audio_encoders_of_initial_weights(dataset, tmp_path, capsys):
    """--init-weights with --model-option audio_layers: more blocks than the file's are grown
    (identities at the start, so the run starts from the file's function), fewer are refused."""
    torch.manual_seed(7)
    source = Generator(preset("small", **{**TINY, "audio_layers": 2}))
    weights = tmp_path / "pretrained.safetensors"
    save_weights(source, weights, {"preset": "small", "steps": 50})
    common = ["train", "generator", "--data", str(dataset), "--device", "cpu", "--no-progress",
              "--batch-size", "2", "--warmup-steps", "1", "--val-every", "2", "--val-batches", "1",
              "--export-dtype", "float32", "--init-weights", str(weights), "--max-steps", "1"]
    layers = source.cfg.audio_layers
    assert cli_main([*common, "--lr", "1e-9", "-o", str(tmp_path / "deep"),
                     "--model-option", f"audio_layers={layers + 2}"]) == 0
    deep = load_generator(tmp_path / "deep" / "generator_ema.safetensors", inference=False)
    assert deep.cfg == replace(source.cfg, audio_layers=layers + 2)
    for encoder, trained in ((deep.self_encoder, source.self_encoder), (deep.other_encoder, source.other_encoder)):
        torch.testing.assert_close(encoder.blocks[layers - 1].mlp[2].weight, trained.blocks[layers - 1].mlp[2].weight,
                                   atol=1e-5, rtol=0)
        assert encoder.blocks[layers].mlp[2].weight.abs().max() < 1e-5  # lr 1e-9: still the identity
    capsys.readouterr()
    assert cli_main([*common, "-o", str(tmp_path / "shallow"), "--model-option", f"audio_layers={layers - 1}"]) == 2
    assert "does not remove blocks" in capsys.readouterr().err


def test_cli_adds_a_running_mean_to_initial_weights_and_calibrates_its_prior(dataset, tmp_path):
    """--init-weights with --model-option mean_norm_seconds: the running mean joins the file's
    model, its prior starts at the training audio's mean log-mel, the rest loads as trained."""
    torch.manual_seed(6)
    source = Generator(preset("small", **TINY))
    weights = tmp_path / "pretrained.safetensors"
    save_weights(source, weights, {"preset": "small", "steps": 50})
    run_dir = tmp_path / "run"
    assert cli_main(["train", "generator", "--data", str(dataset), "--device", "cpu", "--no-progress",
                     "--batch-size", "2", "--warmup-steps", "1", "--val-every", "2", "--val-batches", "1",
                     "--export-dtype", "float32", "--init-weights", str(weights), "--lr", "1e-9", "--max-steps", "1",
                     "--model-option", "mean_norm_seconds=1.0", "--model-option", "mean_norm_context_seconds=0.4",
                     "-o", str(run_dir)]) == 0
    tuned = load_generator(run_dir / "generator_ema.safetensors", inference=False)
    assert tuned.cfg.mean_norm_seconds == 1.0 and tuned.cfg.mean_norm_context_frames == 10
    assert source.self_encoder.running_mean is None
    # lr 1e-9: everything but the new prior is (to 1e-5) the file's.
    torch.testing.assert_close(tuned.self_encoder.front.weight, source.self_encoder.front.weight, atol=1e-5, rtol=0)
    # The prior is the power-weighted mean log-mel of the training audio (both parties): near
    # that mean over every frame of the train split, measured here straight from the log-mel.
    mels = [tuned.self_encoder.logmel(torch.from_numpy(conv.audio[p]).float()[None])[0]
            for conv in load_conversations(dataset, "train") for p in range(2)]
    mel = torch.cat(mels)  # [J, 9, M]: 9 vocal-tract versions
    weight = torch.exp(4 * mel.flatten(1).mean(1).clamp(max=3))[:, None, None]
    expected = (weight * mel).sum(0) / weight.sum()
    for encoder in (tuned.self_encoder, tuned.other_encoder):
        prior = encoder.running_mean.prior.detach()
        assert prior.shape == (9, TINY["n_mels"]) and prior.std() > 0.05  # not the zeros it starts at
        torch.testing.assert_close(prior, expected, atol=0.05, rtol=0)
