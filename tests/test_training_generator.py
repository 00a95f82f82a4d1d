"""Training the real generator (a tiny config of it): exact resume, CLI, export that loads back,
fine-tuning from weights files (growing their lookahead or audio encoders)."""

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
from dystream.training.recipe import GeneratorObjective, TrainingRecipe
from dystream.training.trainer import Trainer, TrainOptions, read_log
from test_training_standin import TINY, TINY_OPTIONS, make_dataset

SIZES = {**TINY, "front_warps": (), "self_lookahead_ms": 40, "other_lookahead_ms": 20}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


def _trainer(dataset, run_dir, max_steps):
    torch.manual_seed(7)
    objective = GeneratorObjective(Generator(preset("small", **SIZES)), TrainingRecipe())
    conversations = load_conversations(dataset, "train")
    objective.network.set_motion_stats(*(torch.from_numpy(a) for a in motion_statistics(conversations)))
    left, right = objective.audio_context()
    bank = WindowBank(conversations, objective.window_frames, left, right)
    val_bank = WindowBank(load_conversations(dataset, "val"), objective.window_frames, left, right)
    options = TrainOptions(batch_size=3, lr=2e-3, warmup_steps=2, max_steps=max_steps, val_every=3,
                           val_batches=1, ckpt_every=100, log_every=1, progress=False)
    return Trainer(objective, bank, val_bank, options, run_dir, ddp.DistributedContext())


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


def _common(dataset, run_dir, *extra):
    return ["train", "generator", "--data", str(dataset), "-o", str(run_dir), "--device", "cpu", "--no-progress",
            "--batch-size", "2", "--warmup-steps", "1", "--val-every", "2", "--val-batches", "1", "--log-every", "1",
            *extra]


def test_cli_trains_the_real_generator_and_the_export_loads(dataset, tmp_path):
    run_dir = tmp_path / "run"
    assert cli_main(_common(dataset, run_dir, "--max-steps", "4", "--lookahead-ms", "30", *TINY_OPTIONS)) == 0
    model = load_generator(run_dir / "generator_ema.safetensors")
    assert model.cfg.self_lookahead_ms == 30 == model.cfg.other_lookahead_ms and model.cfg.window == 12
    info = json.loads(read_metadata(run_dir / "generator_ema.safetensors")["info"])
    assert info["steps"] == 4 and info["export_dtype"] == "float16" and info["train_hours"] > 0
    ema = load_checkpoint(run_dir)["ema"]
    # The export is the EMA network, rounded to fp16; the motion statistics stay exact.
    for name, value in model.state_dict().items():
        expected = ema["network." + name]
        expected = expected if name.startswith("motion_") else expected.half().float()
        assert torch.equal(value, expected), name
    stats = motion_statistics(load_conversations(dataset, "train"))
    # Channels modelled as they are carry the data's statistics; the pose channels of a
    # pose_relative model (the small preset's) carry those of pose minus anchor, which centre
    # on zero and spread less than the absolute pose.
    absolute = model.relative_mask == 0
    assert model.cfg.pose_relative and (~absolute).any()
    assert torch.allclose(model.motion_mean[absolute], torch.from_numpy(stats[0])[absolute])
    assert torch.allclose(model.motion_std[absolute], torch.from_numpy(stats[1])[absolute])
    assert torch.all(model.motion_std[~absolute] < torch.from_numpy(stats[1])[~absolute])
    assert torch.all(model.motion_mean[~absolute].abs() < 0.5 * model.motion_std[~absolute])
    train = [r for r in read_log(run_dir) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    # The default recipe's auxiliary heads train beside the network (and are not exported).
    assert all({"future_mse", "phone_ce", "voice_ce"} <= set(r["last_step_stats"]) for r in train)


def test_cli_rejects_a_lookahead_off_the_mel_hop(dataset, tmp_path, capsys):
    assert cli_main(["train", "generator", "--data", str(dataset), "-o", str(tmp_path / "run"),
                     "--device", "cpu", "--max-steps", "1", "--lookahead-ms", "25"]) == 2
    assert "steps of 10 ms" in capsys.readouterr().err


def _pretrained(tmp_path, seed, **sizes) -> tuple[Generator, Path]:
    torch.manual_seed(seed)
    source = Generator(preset("small", **{**SIZES, **sizes}))
    weights = tmp_path / "pretrained.safetensors"
    save_weights(source, weights, {"preset": "small", "steps": 123})
    return source, weights


def test_cli_fine_tunes_from_weights_and_resumes_the_same_model(dataset, tmp_path, capsys):
    """--init-weights: the run starts from the file's weights, architecture (here a tiny,
    non-preset one) and motion statistics; its record rebuilds that model on --resume."""
    source, weights = _pretrained(tmp_path, 3)
    mean, std = torch.linspace(-1, 1, source.motion_mean.numel()), torch.linspace(0.5, 2, source.motion_std.numel())
    source.set_motion_stats(mean, std)                      # not the data's: must survive fine-tuning
    save_weights(source, weights, {"preset": "small", "steps": 123})
    run_dir = tmp_path / "run"
    common = _common(dataset, run_dir, "--lr-schedule", "constant", "--export-dtype", "float32")
    assert cli_main([*common, "--max-steps", "2", "--init-weights", str(weights)]) == 0
    state = load_checkpoint(run_dir)
    assert state["record"]["init_weights_steps"] == 123 and state["record"]["init_weights"] == weights.name
    assert state["record"]["generator_config"]["width"] == 16        # the file's architecture, not the preset's
    tuned = load_generator(run_dir / "generator_ema.safetensors")
    assert tuned.cfg == source.cfg
    assert torch.equal(tuned.motion_mean, mean) and torch.equal(tuned.motion_std, std)
    moved = [not torch.equal(a, b) for (name, a), b in zip(tuned.state_dict().items(), source.state_dict().values())
             if not name.startswith("motion_")]
    assert any(moved)                                                 # it trained
    # Started from the file: after 2 small steps the weights are still close to it (a fresh
    # random init of the same architecture is far from it).
    fresh = Generator(preset("small", **SIZES))

    def distance(model):
        return sum(float((a - b).abs().sum()) for (name, a), b in
                   zip(model.state_dict().items(), source.state_dict().values()) if not name.startswith("motion_"))

    assert distance(tuned) < 0.1 * distance(fresh)
    assert cli_main([*common, "--max-steps", "3", "--resume"]) == 0
    resumed = load_checkpoint(run_dir)
    assert resumed["step"] == 3 and resumed["record"]["init_weights_steps"] == 123
    assert f"--init-weights {weights.name}" in resumed["record"]["command"]  # the run it continues
    assert cli_main([*common, "--max-steps", "3", "--resume", "--init-weights", str(weights)]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert cli_main([*common, "--max-steps", "1", "--init-weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
    # The architecture comes from the file: other fields than the growable ones are refused.
    assert cli_main([*_common(dataset, tmp_path / "w"), "--max-steps", "1", "--init-weights", str(weights),
                     "--model-option", "width=32"]) == 2
    assert "only audio_layers, other_lookahead_ms, self_lookahead_ms may change" in capsys.readouterr().err


def test_cli_lengthens_the_lookahead_of_initial_weights(dataset, tmp_path, capsys):
    """--init-weights with --lookahead-ms: a longer lookahead than the file's is grown (zero
    weights on the new frames), a shorter one is refused."""
    source, weights = _pretrained(tmp_path, 5)                       # 40 / 20 ms
    common = ["--export-dtype", "float32", "--init-weights", str(weights)]
    run_dir = tmp_path / "run"
    assert cli_main(_common(dataset, run_dir, *common, "--max-steps", "2", "--lookahead-ms", "60")) == 0
    tuned = load_generator(run_dir / "generator_ema.safetensors")
    assert tuned.cfg == source.cfg.with_lookahead(60, 60)
    assert cli_main(_common(dataset, run_dir, "--max-steps", "3", "--resume")) == 0
    assert load_checkpoint(run_dir)["record"]["generator_config"]["self_lookahead_ms"] == 60
    # Per stream, through --model-option; a shorter lookahead is a clear error.
    other_dir = tmp_path / "other"
    assert cli_main(_common(dataset, other_dir, *common, "--max-steps", "1",
                            "--model-option", "other_lookahead_ms=50")) == 0
    grown = load_generator(other_dir / "generator_ema.safetensors").cfg
    assert (grown.self_lookahead_ms, grown.other_lookahead_ms) == (40, 50)
    capsys.readouterr()
    assert cli_main(_common(dataset, tmp_path / "short", *common, "--max-steps", "1", "--lookahead-ms", "30")) == 2
    assert "not shrink" in capsys.readouterr().err


def test_cli_deepens_the_audio_encoders_of_initial_weights(dataset, tmp_path, capsys):
    """--init-weights with --model-option audio_layers: more blocks than the file's are grown
    (identities at the start, so the run starts from the file's function), fewer are refused."""
    source, weights = _pretrained(tmp_path, 7, audio_layers=2)
    common = ["--export-dtype", "float32", "--init-weights", str(weights), "--max-steps", "1"]
    layers = source.cfg.audio_layers
    assert cli_main(_common(dataset, tmp_path / "deep", *common, "--lr", "1e-9",
                            "--model-option", f"audio_layers={layers + 2}")) == 0
    deep = load_generator(tmp_path / "deep" / "generator_ema.safetensors", inference=False)
    assert deep.cfg == replace(source.cfg, audio_layers=layers + 2)
    for encoder, trained in ((deep.self_encoder, source.self_encoder), (deep.other_encoder, source.other_encoder)):
        torch.testing.assert_close(encoder.blocks[layers - 1].mlp[2].weight, trained.blocks[layers - 1].mlp[2].weight,
                                   atol=1e-5, rtol=0)
        assert encoder.blocks[layers].mlp[2].weight.abs().max() < 1e-5  # lr 1e-9: still the identity
    capsys.readouterr()
    assert cli_main(_common(dataset, tmp_path / "shallow", *common,
                            "--model-option", f"audio_layers={layers - 1}")) == 2
    assert "does not remove blocks" in capsys.readouterr().err


def test_cli_fine_tunes_the_bundled_weights(dataset, tmp_path):
    """The bundled file trains on (its recipe's heads start fresh) and the export loads."""
    from dystream.generator.weights import DEFAULT_WEIGHTS

    run_dir = tmp_path / "run"
    assert cli_main(_common(dataset, run_dir, "--max-steps", "1", "--init-weights", str(DEFAULT_WEIGHTS),
                            "--batch-size", "2")) == 0
    assert load_generator(run_dir / "generator_ema.safetensors").cfg == preset("small")
