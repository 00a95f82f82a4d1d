"""Training: windows from shards, anchors, schedule, plateau rule, checkpoints, exact resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dystream.cli import main as cli_main
from dystream.config import SAMPLES_PER_FRAME
from dystream.errors import InputError
from dystream.motion import MOTION_DIM
from dystream.training import ddp
from dystream.training.checkpoint import load_checkpoint, save_checkpoint
from dystream.training.dataset import (LAST_WEIGHTED_FRAMES, WindowBank, choose_anchor, load_conversations,
                                       motion_statistics)
from dystream.training.trainer import Trainer, TrainOptions, ema_decay_at, lr_factor, plateaued, read_log
from test_training_standin import TINY_OPTIONS, StandInConfig, StandInGenerator, make_dataset

CPU = ddp.DistributedContext()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


def test_windows_match_the_conversations_including_silence_outside(dataset):
    conversations = load_conversations(dataset, "train")
    left, right, window = 1000, 700, 12
    bank = WindowBank(conversations, window, left, right)
    assert bank.num_windows == sum(c.num_frames - window + 1 for c in conversations)
    # The first window of the second conversation reads zeros before it; the last
    # window of the first reads zeros after it (never the neighbour's audio).
    first_of_second = conversations[0].num_frames - window + 1
    last_of_first = first_of_second - 1
    for window_index, conv, t0 in ((first_of_second, conversations[1], 0),
                                   (last_of_first, conversations[0], conversations[0].num_frames - window)):
        for self_party in (0, 1):
            self_audio, other_audio, motion = bank.gather(torch.tensor([window_index]), torch.tensor([self_party]))
            padded = np.zeros((2, left + conv.num_frames * SAMPLES_PER_FRAME + right), np.float32)
            padded[:, left:left + conv.num_frames * SAMPLES_PER_FRAME] = conv.audio[:, :conv.num_frames * SAMPLES_PER_FRAME]
            start = t0 * SAMPLES_PER_FRAME
            expected = padded[:, start:start + left + window * SAMPLES_PER_FRAME + right]
            # int16 storage is exact for the 16-bit audio the shards hold.
            np.testing.assert_allclose(self_audio[0].numpy(), expected[self_party], atol=1 / 32768)
            np.testing.assert_allclose(other_audio[0].numpy(), expected[1 - self_party], atol=1 / 32768)
            np.testing.assert_array_equal(motion[0].numpy(), conv.motion[self_party, t0:t0 + window])
    assert bank.audio.dtype == torch.int16 and bank.motion.dtype == torch.float32


def test_sampled_batches_have_the_contract_shapes_and_are_seeded(dataset):
    bank = WindowBank(load_conversations(dataset, "train"), 12, 640, 960)
    batch = bank.sample(5, torch.Generator().manual_seed(3))
    assert batch.self_audio.shape == (5, 640 + 12 * SAMPLES_PER_FRAME + 960)
    assert batch.other_audio.shape == batch.self_audio.shape
    assert batch.motion.shape == (5, 12, MOTION_DIM) and batch.anchor.shape == (5, MOTION_DIM)
    again = bank.sample(5, torch.Generator().manual_seed(3))
    assert torch.equal(batch.self_audio, again.self_audio) and torch.equal(batch.anchor, again.anchor)
    other_seed = bank.sample(5, torch.Generator().manual_seed(4))
    assert not torch.equal(batch.motion, other_seed.motion)


def test_short_conversations_are_skipped_and_none_usable_is_an_input_error(dataset):
    conversations = load_conversations(dataset, "train")
    longest = max(c.num_frames for c in conversations)
    bank = WindowBank(conversations, longest, 0, 0)
    assert bank.num_conversations == 1 and bank.num_windows == 1
    with pytest.raises(InputError, match="no conversation has at least"):
        WindowBank(conversations, longest + 1, 0, 0)


def test_missing_data_is_an_input_error_that_names_the_fix(tmp_path):
    with pytest.raises(InputError, match="dystream data synth"):
        load_conversations(tmp_path / "nowhere", "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(InputError, match="no shards"):
        load_conversations(tmp_path, "train")


def test_anchor_strategies():
    batch, window = 4000, 24
    # Each frame's motion holds its own index, so the anchor tells where it came from.
    motion = torch.arange(window, dtype=torch.float32)[None, :, None].expand(batch, window, MOTION_DIM).contiguous()
    generator = torch.Generator().manual_seed(0)

    anchor, keep = choose_anchor(motion, "last-weighted", generator)
    positions = anchor[:, 0].long()
    assert keep.all()
    assert positions.min() >= window - LAST_WEIGHTED_FRAMES and positions.max() == window - 1
    counts = torch.bincount(positions - (window - LAST_WEIGHTED_FRAMES), minlength=LAST_WEIGHTED_FRAMES).float()
    expected = torch.arange(1, LAST_WEIGHTED_FRAMES + 1).float() / 55 * batch
    assert torch.all((counts - expected).abs() < 4 * expected.sqrt() + 5), counts  # newest likeliest
    assert counts[-1] > 5 * counts[0]

    anchor, keep = choose_anchor(motion, "random", generator)
    assert keep.all() and anchor[:, 0].min() == 0 and anchor[:, 0].max() == window - 1

    # "none": the model never sees the anchor (keep False), but its frame is still drawn
    # from the last ones, for models that measure pose from it.
    anchor, keep = choose_anchor(motion, "none", generator)
    assert not keep.any() and anchor[:, 0].min() >= window - LAST_WEIGHTED_FRAMES

    with pytest.raises(InputError, match="last-weighted"):
        choose_anchor(motion, "first", generator)


def test_motion_statistics_match_numpy(dataset):
    conversations = load_conversations(dataset, "train")
    mean, std = motion_statistics(conversations)
    frames = np.concatenate([c.motion.reshape(-1, MOTION_DIM) for c in conversations])
    np.testing.assert_allclose(mean, frames.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, np.maximum(frames.std(0), 1e-3), rtol=1e-4, atol=1e-6)


def test_learning_rate_warms_up_linearly_then_follows_a_cosine():
    options = TrainOptions(warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_factor(0, options) == pytest.approx(0.1)
    assert lr_factor(9, options) == pytest.approx(1.0)
    assert lr_factor(10, options) == pytest.approx(1.0)
    assert lr_factor(60, options) == pytest.approx(0.55)
    assert lr_factor(110, options) == pytest.approx(0.1)
    constant = TrainOptions(warmup_steps=10, max_steps=110, schedule="constant")
    assert lr_factor(100, constant) == 1.0


def test_plateau_rule():
    improving = [(s, 1.0 / s) for s in range(100, 1100, 100)]
    assert not plateaued(improving)
    flat = [(s, 1.0 if s <= 800 else 0.995) for s in range(100, 1100, 100)]
    assert plateaued(flat)  # 0.5% better over the last 20% of steps
    assert not plateaued(flat[:4])  # too few validations to judge
    worse = [(s, 1.0 if s <= 800 else 1.2) for s in range(100, 1100, 100)]
    assert plateaued(worse)


def _trainer(dataset, run_dir, max_steps, seed=0):
    torch.manual_seed(1234)  # the same initial weights for every run
    model = StandInGenerator(StandInConfig())
    conversations = load_conversations(dataset, "train")
    mean, std = motion_statistics(conversations)
    model.set_motion_stats(torch.from_numpy(mean), torch.from_numpy(std))
    left, right = model.audio_context()
    bank = WindowBank(conversations, model.cfg.window, left, right)
    val_bank = WindowBank(load_conversations(dataset, "val"), model.cfg.window, left, right)
    options = TrainOptions(batch_size=4, lr=3e-3, warmup_steps=3, max_steps=max_steps, val_every=3,
                           val_batches=2, ckpt_every=100, log_every=1, seed=seed, progress=False)
    return Trainer(model, bank, val_bank, options, run_dir, CPU)


def test_resume_reproduces_the_uninterrupted_run_exactly(dataset, tmp_path):
    total, split_at = 8, 5
    straight = _trainer(dataset, tmp_path / "straight", total)
    straight.fit()

    first = _trainer(dataset, tmp_path / "resumed", total)
    first.fit(interrupt_after=split_at)  # saves a checkpoint where it stops
    resumed = _trainer(dataset, tmp_path / "resumed", total)
    torch.manual_seed(999)  # disturb the global RNG: the checkpoint must not depend on it
    resumed.load_state_dict(load_checkpoint(tmp_path / "resumed", map_location="cpu"))
    assert resumed.step == split_at
    resumed.fit()

    def losses(run):
        return [(r["step"], r["loss"]) for r in read_log(tmp_path / run) if r["kind"] == "train"]

    def val_losses(run):
        return [(r["step"], r["val_loss"]) for r in read_log(tmp_path / run) if r["kind"] == "val"]

    assert [s for s, _ in losses("resumed")] == list(range(1, total + 1))
    assert losses("resumed") == losses("straight")  # bit-exact
    assert val_losses("resumed") == val_losses("straight") and len(val_losses("straight")) == 3
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema.parameters(), resumed.ema.parameters()):
        assert torch.equal(a, b)
    # Different seeds draw different batches.
    other = _trainer(dataset, tmp_path / "other_seed", 2, seed=1)
    other.fit()
    assert losses("other_seed")[1] != losses("straight")[1]


def test_training_lowers_the_validation_loss(dataset, tmp_path):
    trainer = _trainer(dataset, tmp_path / "run", 60)
    trainer.options.lr, trainer.options.schedule, trainer.options.val_every = 1e-2, "constant", 30
    initial = trainer.validation_loss(trainer.model)
    trainer.fit()
    # The stand-in sees the noisy target, so it can always beat the untrained guess.
    assert trainer.validation_loss(trainer.model) < 0.9 * initial
    train_losses = [r["loss"] for r in read_log(tmp_path / "run") if r["kind"] == "train"]
    assert np.mean(train_losses[-10:]) < 0.9 * np.mean(train_losses[:10])


def test_ema_is_a_float32_running_average_of_the_weights(dataset, tmp_path):
    trainer = _trainer(dataset, tmp_path / "run", 1)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_step()
    for initial, weight, ema in zip(before, trainer.model.parameters(), trainer.ema.parameters()):
        assert ema.dtype == torch.float32 and not ema.requires_grad
        # The first update uses the ramped-up decay (1 + 0) / (10 + 0) = 0.1.
        torch.testing.assert_close(ema, initial + (1 - 0.1) * (weight - initial), rtol=0, atol=1e-6)
    assert not torch.equal(before[0], next(trainer.model.parameters()))
    assert torch.equal(trainer.ema.motion_std, trainer.model.motion_std)


def test_ema_decay_ramps_up_to_its_target():
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(90, 0.999) == pytest.approx(0.91)
    assert ema_decay_at(20_000, 0.999) == 0.999
    assert all(ema_decay_at(s, 0.999) <= ema_decay_at(s + 1, 0.999) for s in range(0, 12_000, 7))


def test_checkpoint_is_atomic_when_saving_fails(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "payload": torch.ones(3)})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2, "payload": torch.zeros(3)})
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["payload"], torch.ones(3))


def test_resume_without_a_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(InputError, match="without --resume"):
        load_checkpoint(tmp_path)


def test_batch_size_must_split_evenly_across_processes():
    with pytest.raises(InputError, match="multiple of the number of processes"):
        TrainOptions(batch_size=6).validate(world_size=4)


def _cli(dataset, run_dir, *extra):
    return cli_main(["train", "generator", "--data", str(dataset), "-o", str(run_dir), *TINY_OPTIONS,
                     "--device", "cpu", "--no-progress",
                     "--batch-size", "4", "--warmup-steps", "2", "--val-batches", "1", "--log-every", "2", *extra])


def test_cli_trains_exports_and_plots(dataset, tmp_path):
    from safetensors import safe_open

    run_dir = tmp_path / "run"
    assert _cli(dataset, run_dir, "--max-steps", "6", "--val-every", "3", "--lookahead-ms", "20",
                "--model-option", "head_width=8", "--recipe-option", "phone_weight=0",
                "--anchor-strategy", "random") == 0
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "loss_curve.png").stat().st_size > 1000
    assert not [p for p in run_dir.iterdir() if ".tmp-" in p.name]
    with safe_open(run_dir / "generator_ema.safetensors", "pt") as f:
        meta = f.metadata()
        exported = f.get_tensor("head.out.weight")
        assert not [k for k in f.keys() if "probe" in k]  # the recipe's auxiliary heads stay in training
    assert exported.shape == (MOTION_DIM, 8) and exported.dtype == torch.float16
    training = json.loads(meta["info"])
    assert training["steps"] == 6 and training["stopped_because"] == "max-steps"
    assert training["data"] == dataset.name and training["train_hours"] > 0  # no machine path in a record
    assert training["recipe"]["phone_weight"] == 0 and training["recipe"]["future_frames"] == 8
    assert training["command"].startswith("dystream train generator --data ") and "cpu_process_seconds" in training
    assert "--lookahead-ms 20" in training["command"] and "--model-option head_width=8" in training["command"]
    assert str(tmp_path) not in meta["info"]
    assert json.loads(meta["config"])["self_lookahead_ms"] == 20 == json.loads(meta["config"])["other_lookahead_ms"]
    assert training["export_dtype"] == "float16"
    assert abs(training["final_val_loss_export_dtype"] - training["final_val_loss_fp32"]) < 1e-2 * training["final_val_loss_fp32"]
    records = read_log(run_dir)
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4, 6]
    assert [r["step"] for r in records if r["kind"] == "val"] == [3, 6]
    assert all(np.isfinite(r["loss"]) and r["samples_per_s"] > 0 and r["grad_norm"] >= 0
               for r in records if r["kind"] == "train")

    # --resume continues from the run directory's checkpoint with the saved model settings.
    assert _cli(dataset, run_dir, "--max-steps", "8", "--val-every", "3", "--resume") == 0
    records = read_log(run_dir)
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4, 6, 8]
    assert load_checkpoint(run_dir)["step"] == 8


def test_cli_until_plateau_stops_when_validation_stalls(dataset, tmp_path):
    run_dir = tmp_path / "run"
    # A vanishing learning rate cannot improve the validation loss: the rule must fire
    # at the fifth validation (the fewest it judges from), long before --max-steps.
    assert _cli(dataset, run_dir, "--max-steps", "400", "--val-every", "2", "--lr", "1e-12", "--until-plateau") == 0
    record = json.loads((run_dir / "training_record.json").read_text())
    assert record["stopped_because"] == "plateau" and record["steps"] == 10


def test_cli_bad_input_is_one_line_with_exit_2(dataset, tmp_path, capsys):
    assert _cli(tmp_path / "missing", tmp_path / "run", "--max-steps", "1") == 2
    assert "dystream data synth" in capsys.readouterr().err
    assert _cli(dataset, tmp_path / "run", "--max-steps", "1", "--model-option", "layers") == 2
    assert "FIELD=VALUE" in capsys.readouterr().err
    assert _cli(dataset, tmp_path / "run", "--max-steps", "1", "--model-option", "no_such=1") == 2
    assert "no such field" in capsys.readouterr().err
    assert _cli(dataset, tmp_path / "run", "--max-steps", "1", "--recipe-option", "dropout=1.5") == 2
    assert "must be in [0, 1)" in capsys.readouterr().err
    assert _cli(dataset, tmp_path / "fresh", "--max-steps", "1", "--resume") == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_cli_max_minutes_stops_at_the_first_check_and_saves(dataset, tmp_path):
    run_dir = tmp_path / "run"
    assert _cli(dataset, run_dir, "--max-steps", "400", "--val-every", "100", "--max-minutes", "0") == 0
    record = json.loads((run_dir / "training_record.json").read_text())
    assert record["stopped_because"] == "max-minutes" and record["steps"] == 2  # the first log step
    assert load_checkpoint(run_dir)["step"] == 2
