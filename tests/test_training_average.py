"""`dystream train average`: the weighted mean of generator weights files."""

import json

import pytest
import torch

from dystream.cli import main
from dystream.errors import InputError
from dystream.generator.weights import load_generator, read_metadata, save_weights
from dystream.training.average import average_generators

from generator_helpers import single_thread  # noqa: F401  (autouse fixture)
from generator_helpers import tiny_generator


def _two_files(tmp_path, **options):
    a = tiny_generator(seed=0, **options)
    b = tiny_generator(seed=1, **options)
    pa = save_weights(a, tmp_path / "a.safetensors", {"steps": 10, "preset": "small"})
    pb = save_weights(b, tmp_path / "b.safetensors", {"steps": 30, "init_weights": "/x/a.safetensors"})
    return pa, pb


def test_the_average_is_the_weighted_mean_of_every_tensor(tmp_path):
    pa, pb = _two_files(tmp_path)
    a, b = (load_generator(p, inference=False).state_dict() for p in (pa, pb))
    assert any(not torch.equal(a[k], b[k]) for k in a)         # two different models
    model, info = average_generators([pa, pb], [1.0, 3.0])
    for name, tensor in model.state_dict().items():
        assert torch.allclose(tensor, 0.25 * a[name] + 0.75 * b[name], atol=1e-6), name
    assert [s["weight"] for s in info["averaged_from"]] == [0.25, 0.75]
    assert info["averaged_from"][1]["steps"] == 30 and info["averaged_from"][1]["init_weights"] == "a.safetensors"
    equal, _ = average_generators([pa, pb])
    for name, tensor in equal.state_dict().items():
        assert torch.allclose(tensor, (a[name] + b[name]) / 2, atol=1e-6), name


def test_the_command_writes_loadable_weights_with_a_record(tmp_path, capsys):
    pa, pb = _two_files(tmp_path)
    out = tmp_path / "mean.safetensors"
    assert main(["train", "average", str(pa), str(pb), "-o", str(out), "--dtype", "float32"]) == 0
    assert "a.safetensors x 0.5" in capsys.readouterr().out
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(str(out)).values()} == {torch.float32}  # as asked, encoders too
    model = load_generator(out)
    expected, _ = average_generators([pa, pb])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected.state_dict()[name]), name
    info = json.loads(read_metadata(out)["info"])
    assert info["command"].startswith("dystream train average") and info["preset"] == "small"
    assert [s["file"] for s in info["averaged_from"]] == ["a.safetensors", "b.safetensors"]


def test_bad_averages_are_clear_errors(tmp_path, capsys):
    pa, pb = _two_files(tmp_path)
    other = save_weights(tiny_generator(self_lookahead_ms=40), tmp_path / "c.safetensors", {})
    with pytest.raises(InputError, match="another configuration.*lookahead"):
        average_generators([pa, other])
    with pytest.raises(InputError, match="at least two"):
        average_generators([pa])
    with pytest.raises(InputError, match="one per file"):
        average_generators([pa, pb], [1.0])
    with pytest.raises(InputError, match="positive"):
        average_generators([pa, pb], [1.0, 0.0])
    out = tmp_path / "never.safetensors"
    assert main(["train", "average", str(pa), str(tmp_path / "missing.safetensors"), "-o", str(out)]) == 2
    assert "not found" in capsys.readouterr().err and not out.exists()


def test_modules_average_only_those_modules_and_keep_the_first_files_other_tensors(tmp_path, capsys):
    pa, pb = _two_files(tmp_path)
    a, b = (load_generator(p, inference=False).state_dict() for p in (pa, pb))
    model, info = average_generators([pa, pb], modules=["self_encoder", "other_encoder"])
    averaged = kept = 0
    for name, tensor in model.state_dict().items():
        if name.split(".")[0] in ("self_encoder", "other_encoder"):
            assert torch.allclose(tensor, (a[name] + b[name]) / 2, atol=1e-6), name
            averaged += not torch.equal(a[name], b[name])
        else:
            assert torch.equal(tensor, a[name]), name
            kept += not torch.equal(a[name], b[name])
    assert averaged > 0 and kept > 0                            # both kinds were really different
    assert info["averaged_modules"] == ["other_encoder", "self_encoder"]
    out = tmp_path / "enc.safetensors"
    assert main(["train", "average", str(pa), str(pb), "-o", str(out), "--modules", "self_encoder"]) == 0
    assert "--modules self_encoder" in json.loads(read_metadata(out)["info"])["command"]
    with pytest.raises(InputError, match="not a module.*choose from.*transformer"):
        average_generators([pa, pb], modules=["self_encoders"])
