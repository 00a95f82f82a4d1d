"""DDP: the training command under torchrun with 2 CPU processes (gloo), and resuming on another count."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from dystream.cli import main as cli_main
from dystream.training.checkpoint import load_checkpoint
from dystream.training.trainer import read_log
from test_training_standin import TINY_OPTIONS, make_dataset

TESTS_DIR = Path(__file__).resolve().parent


def test_two_process_gloo_run_saves_from_rank_0_only_and_resumes_on_one(tmp_path):
    data = make_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    save_log = tmp_path / "saves"
    save_log.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
           "DYSTREAM_TEST_SAVE_LOG": str(save_log), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "test_training_standin", "train", "generator", "--data", str(data), "-o", str(run_dir),
               *TINY_OPTIONS, "--device", "cpu", "--no-progress",
               "--batch-size", "4", "--max-steps", "6", "--warmup-steps", "2", "--log-every", "2",
               "--val-every", "3", "--val-batches", "1", "--ckpt-every", "3"]
    # Own process group: if the run hangs, the launcher and both workers are killed together.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        raise AssertionError(f"2-process run hung; its stderr ends with:\n{stderr[-4000:]}") from None
    assert process.returncode == 0, stderr[-4000:]

    # Only rank 0 saved: at the checkpoint interval and at the end.
    assert sorted(p.name for p in save_log.iterdir()) == ["saves-rank0.txt"]
    assert (save_log / "saves-rank0.txt").read_text().split() == ["3", "6"]
    assert not [p for p in run_dir.iterdir() if ".tmp-" in p.name]

    records = read_log(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [2, 4, 6]  # one record per step: only rank 0 logs
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    assert [r["step"] for r in records if r["kind"] == "val"] == [3, 6]
    record = json.loads((run_dir / "training_record.json").read_text())
    assert record["world_size"] == 2 and record["command"].startswith("torchrun --nproc_per_node=2 -m dystream")
    state = load_checkpoint(run_dir)
    assert state["world_size"] == 2 and state["step"] == 6

    # A checkpoint of 2 processes resumes on 1 (here in-process, no torchrun).
    sys.path.insert(0, str(TESTS_DIR))
    assert cli_main(["train", "generator", "--data", str(data), "-o", str(run_dir), *TINY_OPTIONS,
                     "--device", "cpu", "--no-progress", "--batch-size", "4",
                     "--max-steps", "8", "--warmup-steps", "2", "--log-every", "2", "--val-every", "3",
                     "--val-batches", "1", "--resume"]) == 0
    assert load_checkpoint(run_dir)["step"] == 8 and load_checkpoint(run_dir)["world_size"] == 1
    assert [r["step"] for r in read_log(run_dir) if r["kind"] == "train"] == [2, 4, 6, 8]
