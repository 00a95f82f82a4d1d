"""The synthetic conversation engine end to end (needs flite, and Festival's ked for the val split)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dystream.config import FRAMES_PER_SECOND, SAMPLE_RATE, SAMPLES_PER_FRAME
from dystream.data.schema import SPLITS, read_shard, read_shard_meta, shard_paths
from dystream.data.synth import SynthSettings, synthesize_dataset
from dystream.errors import InputError
from dystream.motion import MOTION_DIM

pytestmark = pytest.mark.tts

if shutil.which("flite") is None and not os.environ.get("DYSTREAM_FLITE"):
    pytest.skip("flite is not installed (apt-get install flite)", allow_module_level=True)
if shutil.which("festival") is None and not os.environ.get("DYSTREAM_FESTIVAL"):
    pytest.skip("Festival is not installed (apt-get install festival festvox-kdlpc16k)", allow_module_level=True)


def tiny_settings(**changes) -> SynthSettings:
    settings = SynthSettings(seed=11, hours=0.015, engines=["flite", "festival"], long_test_conversations=0,
                             conversations_per_shard=1, min_seconds=20.0, max_seconds=25.0)
    for key, value in changes.items():
        setattr(settings, key, value)
    return settings


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "one-worker"
    synthesize_dataset(root, tiny_settings(), workers=1, progress=False)
    return root


def shard_contents(root: Path) -> dict[str, tuple]:
    out = {}
    for split in SPLITS:
        for path in shard_paths(root, split):
            for conv in read_shard(path):
                out[conv.id] = (conv.audio, conv.motion, json.dumps(read_shard_meta(path), sort_keys=True))
    return out


@pytest.mark.parametrize("workers", [2, 3])
def test_output_is_the_same_whatever_the_worker_count(dataset, tmp_path, workers):
    # 5 one-conversation shards: 2 workers make whole shards, 3 workers single conversations
    other = tmp_path / f"{workers}-workers"
    manifest = synthesize_dataset(other, tiny_settings(), workers=workers, progress=False)
    assert manifest["last_run"]["shards_written"] == 5
    a, b = shard_contents(dataset), shard_contents(other)
    assert sorted(a) == sorted(b) and len(a) == 5
    for conv_id in a:
        np.testing.assert_array_equal(a[conv_id][0], b[conv_id][0])
        np.testing.assert_array_equal(a[conv_id][1], b[conv_id][1])
        assert a[conv_id][2] == b[conv_id][2]


@pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                    reason="espeak-ng is not installed (pip install espeakng-loader)")
def test_shard_files_are_byte_identical_whatever_the_worker_count(tmp_path):
    # all three engines: seed 5 gives espeak-ng parties in every split (breathy rp+f3 in
    # test, three with timbre in training), flite in training and test, Festival in val;
    # 4 one-conversation shards: 2 workers make whole shards, 3 single conversations
    settings = tiny_settings(seed=5, hours=0.01, engines=["flite", "espeak", "festival"])
    digests = []
    for workers in (1, 2, 3):
        root = tmp_path / f"{workers}-workers"
        manifest = synthesize_dataset(root, settings, workers=workers, progress=False)
        assert manifest["last_run"]["shards_written"] == 4
        digests.append({str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
                        for path in sorted(root.glob("*/shard-*.npz"))})
        used = {v for path in root.glob("*/shard-*.npz") for c in read_shard_meta(path)["conversations"]
                for v in c["voices"]}
        assert {v.split(":", 1)[0] for v in used} == {"flite", "espeak", "festival"}
    assert len(digests[0]) == 4 and digests[0] == digests[1] == digests[2]


def test_another_seed_gives_other_conversations(dataset, tmp_path):
    other = tmp_path / "seed"
    synthesize_dataset(other, tiny_settings(seed=12), workers=1, progress=False)
    first = read_shard(shard_paths(dataset, "train")[0])[0]
    second = read_shard(shard_paths(other, "train")[0])[0]
    assert [w[0] for w in first.labels[0].words] != [w[0] for w in second.labels[0].words]


def test_shards_load_back_with_the_documented_schema(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    listed = {entry["path"] for entry in manifest["shards"]}
    for split in SPLITS:
        paths = shard_paths(dataset, split)
        assert paths, f"no {split} shards"
        for path in paths:
            assert str(path.relative_to(dataset)) in listed
            for conv in read_shard(path):
                assert conv.split == split and conv.id.startswith(split)
                assert conv.audio.dtype == np.float32 and conv.audio.shape[0] == 2
                assert conv.audio.shape[1] % SAMPLES_PER_FRAME == 0
                assert conv.motion.shape == (2, conv.audio.shape[1] // SAMPLES_PER_FRAME, MOTION_DIM)
                assert conv.extra["target_seconds"] <= conv.duration <= 45.0
                assert np.abs(conv.audio).max() < 0.99  # levelled, never clipped
                assert set(conv.voices) <= set(manifest["voices"][split])
                for party in range(2):
                    assert "neutral" in conv.style[party]
                    # each party's track holds that party: louder inside its own phrases
                    inside = conv.speaking(party)
                    frame_energy = (conv.audio[party].reshape(-1, SAMPLES_PER_FRAME) ** 2).mean(axis=1)
                    assert frame_energy[inside].mean() > 20 * frame_energy[~inside].mean()


def test_voices_and_texts_are_disjoint_between_splits(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    voices = manifest["voices"]
    assert not set(voices["train"]) & set(voices["test"])
    assert not set(voices["train"]) & set(voices["val"])
    from dystream.data.text import split_of_text

    for split in SPLITS:
        for path in shard_paths(dataset, split):
            for conv in read_shard(path, with_audio=False):
                assert set(conv.voices) <= set(voices[split])
                sentences = [s for party in conv.extra["sentences"] for s in party]
                assert sentences and all(split_of_text(s) == split for s in sentences)


def test_phone_and_word_timings_are_real(dataset):
    checked_words = 0
    varied = 0
    for path in shard_paths(dataset, "train"):
        for conv in read_shard(path):
            for party, lab in enumerate(conv.labels):
                starts = np.array([p[1] for p in lab.phones])
                ends = np.array([p[2] for p in lab.phones])
                # a party that only listens says backchannels alone
                assert len(starts) > (20 if conv.extra["sentences"][party] else 0)
                assert np.all(ends >= starts) and np.all(np.diff(starts) >= 0)
                assert starts.min() >= 0 and ends.max() <= conv.duration
                assert {p[0] for p in lab.phones} <= _CMUDICT_PHONES
                for word, w_start, w_end in lab.words:
                    inside = [(e - s) for p, s, e in lab.phones
                              if s >= w_start - 1e-3 and e <= w_end + 1e-3 and p != "pau"]
                    if len(inside) >= 3:
                        checked_words += 1
                        # engine timing, not an even spread over the word
                        varied += (max(inside) - min(inside)) > 0.02
                for start, end in lab.phrases + lab.backchannels:
                    assert 0 <= start < end <= conv.duration
    assert checked_words > 20
    assert varied / checked_words > 0.8


def test_resume_after_an_interruption_keeps_finished_shards(dataset, tmp_path):
    root = tmp_path / "resumed"
    shutil.copytree(dataset, root)
    paths = sorted(root.glob("*/shard-*.npz"))
    kept, lost = paths[0], paths[-1]
    reference = lost.read_bytes()
    kept_stat = kept.stat()
    lost.unlink()  # never written: the run was killed first
    (lost.parent / f".{lost.name}.tmp-99999").write_bytes(b"half a shard")  # its leftover temp file
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["status"] = "incomplete"
    (root / "manifest.json").write_text(json.dumps(manifest))

    result = synthesize_dataset(root, tiny_settings(), workers=1, progress=False)
    assert result["status"] == "complete"
    assert result["last_run"]["shards_written"] == 1
    assert lost.read_bytes() == reference
    assert kept.stat().st_mtime_ns == kept_stat.st_mtime_ns and kept.stat().st_ino == kept_stat.st_ino


def test_train_timbre_changes_the_training_speakers_only(dataset, tmp_path):
    plain = tmp_path / "no-timbre"
    synthesize_dataset(plain, tiny_settings(train_timbre=(1.0, 1.0)), workers=1, progress=False)
    a, b = shard_contents(dataset), shard_contents(plain)
    assert sorted(a) == sorted(b)
    low, high = tiny_settings().train_timbre
    changed = 0
    for conv_id in a:
        if conv_id.startswith("train"):
            changed += a[conv_id][0].shape != b[conv_id][0].shape or not np.array_equal(a[conv_id][0], b[conv_id][0])
        else:  # val and test conversations do not depend on the setting
            np.testing.assert_array_equal(a[conv_id][0], b[conv_id][0])
            np.testing.assert_array_equal(a[conv_id][1], b[conv_id][1])
    assert changed == sum(c.startswith("train") for c in a) > 0
    for split, root in (("train", dataset), ("val", dataset), ("train", plain)):
        for path in shard_paths(root, split):
            for conv in read_shard(path, with_audio=False):
                timbres = conv.extra["timbre"]
                if split == "train" and root == dataset:
                    assert all(low <= t <= high for t in timbres) and timbres != [1.0, 1.0]
                else:
                    assert timbres == [1.0, 1.0]


def test_other_settings_are_refused_in_an_existing_folder(dataset):
    with pytest.raises(InputError, match="seed"):
        synthesize_dataset(dataset, tiny_settings(seed=99), workers=1, progress=False)


def test_bad_settings_give_clear_errors(tmp_path):
    with pytest.raises(InputError, match="--hours"):
        synthesize_dataset(tmp_path / "a", tiny_settings(hours=0), progress=False)
    with pytest.raises(InputError, match="--workers"):
        synthesize_dataset(tmp_path / "b", tiny_settings(), workers=0, progress=False)
    with pytest.raises(InputError, match="unknown engine"):
        synthesize_dataset(tmp_path / "c", tiny_settings(engines=["flite", "piper"]), progress=False)
    with pytest.raises(InputError, match="training split has no voices"):
        synthesize_dataset(tmp_path / "c", tiny_settings(engines=["festival"]), progress=False)
    with pytest.raises(InputError, match="val split has no voice.*add espeak or festival"):
        synthesize_dataset(tmp_path / "c", tiny_settings(engines=["flite"]), progress=False)
    with pytest.raises(InputError, match="unknown voice.*flite:nobody"):
        synthesize_dataset(tmp_path / "c", tiny_settings(exclude_voices=["flite:nobody"]), progress=False)
    assert not (tmp_path / "c").exists()
    with pytest.raises(InputError, match="--train-timbre"):
        synthesize_dataset(tmp_path / "d", tiny_settings(train_timbre=(1.3, 1.1)), progress=False)


def test_inspect_reports_statistics_and_draws_an_example(dataset, tmp_path):
    from dystream.data.inspect import dataset_statistics, format_statistics, plot_example

    stats = dataset_statistics(dataset)
    train = stats["splits"]["train"]
    assert train["conversations"] >= 2 and train["hours"] > 0
    assert 0.2 < train["speaking_fraction"] < 0.8
    assert train["megabytes_per_hour"] > 0
    assert "voices train: flite:awb, flite:kal16, flite:rms" in format_statistics(stats)
    assert "voices val: festival:ked" in format_statistics(stats)
    png = plot_example(dataset, tmp_path / "example.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_cli_runs_and_reports_errors_in_one_line(tmp_path, capsys):
    from dystream.cli import main

    out = tmp_path / "cli"
    assert main(["data", "synth", "--hours", "0.005", "-o", str(out), "--engines", "flite,festival",
                 "--long-test-conversations", "0", "--max-seconds", "20", "--quiet"]) == 0
    assert (out / "manifest.json").exists()
    assert main(["data", "inspect", str(out)]) == 0
    assert "hours" in capsys.readouterr().out
    assert main(["data", "synth", "--hours", "0.005", "-o", str(out), "--seed", "3", "--engines", "flite,festival",
                 "--quiet"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["data", "inspect", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "synth", "--hours", "1", "-o", str(out), "--split-hours", "train:1"])


_CMUDICT_PHONES = set("aa ae ah ao aw ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy p pau r s sh t "
                      "th uh uw v w y z zh".split())
