"""Which property of a voice decides lip closure? Bilabial closure of generator weights
on flite voices whose audio is changed one property at a time.

    python benchmarks/voice_probe.py [--data DIR] [--sentences 120] [--weights FILE] [--json out.json]
        [--cases voice|channel]

Speaks the same test-split sentences (``dystream.data.text``, seed 0) with flite's
``slt`` (the unseen test voice whose bilabials the model misses) and the training
voices ``awb`` and ``rms``, 0.4 s apart, the partner silent, and generates motion
(default steps and guidance, seed 0; anchor: with ``--data`` the first test
conversation's, as docs/generator.md ran it, else a resting face). Then
scores ``bilabial_closure_counts`` against flite's own phone times for:

* pitch alone: flite's ``int_f0_target_mean`` (the clustergen voices' F0; durations
  and spectra otherwise unchanged);
* the energy gap: every p/b/m interval attenuated (slt) or given a low murmur of 4
  harmonics (awb, rms) - the cue the training voices' closures carry;
* loudness, a low shelf and spectral tilt (static equalisation);
* formants: slt resampled (formants and pitch x 0.85 and x 0.75; phone times scaled
  to match), also spoken faster first so that the tempo is the original's, and with
  its F0 raised first so that only the formants move; awb and rms the other way
  (x 1.18, towards a female vocal tract).

The data engine's augmentation is not applied: this looks at clean speech. With
``--cases channel`` it is, one part at a time, to slt and awb levelled to the data
engine's speech level (``dystream.data.augment``: white noise at 25 dB SNR, a room of
0.4 s at mix 0.2, a 200-4500 Hz band, -8 dB, tape speed 0.97, and a typical mix of
these), which shows how much of the gap between clean slt and slt in the test split's
conversations the recording channel makes.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

SAMPLE_RATE = 16000
GAP_S = 0.4


def speak(voice: str, sentences: list[str], f0: float | None = None,
          stretch: float = 1.0) -> tuple[np.ndarray, list]:
    """One track of the sentences ``GAP_S`` apart, and its phones (name, start, end);
    ``f0``: flite's target mean F0 (Hz), ``stretch``: its duration_stretch."""
    import dystream.data.tts.flite as flite

    run = flite._run
    if f0:
        flite._run = lambda args: run(args[:2] + ["--setf", f"int_f0_target_mean={f0}"] + args[2:])
    try:
        utterances = flite.synthesize(voice, sentences, duration_stretch=stretch)
    finally:
        flite._run = run
    audio, phones, t = [], [], 0.0
    for u in utterances:
        audio += [u.audio, np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)]
        phones += [(p, s + t, e + t) for p, s, e in u.phones]
        t += u.duration + GAP_S
    track = np.concatenate(audio)
    return track[: len(track) // 640 * 640], phones


def bilabials(phones) -> list[tuple[int, int]]:
    """Sample spans of the phones the closure metric scores (its own phone set)."""
    from dystream.metrics.events import BILABIALS

    return [(int(s * SAMPLE_RATE), int(e * SAMPLE_RATE)) for p, s, e in phones
            if str(p).lower().rstrip("012") in BILABIALS]


def attenuate(audio: np.ndarray, phones, db: float) -> np.ndarray:
    out = audio.copy()
    for a, b in bilabials(phones):
        out[a:b] *= 10 ** (db / 20)
    return out


def murmur(audio: np.ndarray, phones, db: float, f0: float) -> np.ndarray:
    """Adds 4 harmonics of f0 (each 6 dB below the last) at ``db`` re the speech RMS."""
    out = audio.copy()
    speech = audio[np.abs(audio) > 1e-3]
    if not speech.size:
        raise ValueError("the track is silent: no speech level to set the murmur from")
    rms = np.sqrt(np.mean(speech**2))
    for a, b in bilabials(phones):
        n = b - a
        if n <= 0:
            continue
        t = np.arange(n) / SAMPLE_RATE
        x = sum(0.5 ** (k - 1) * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 5))
        x *= np.sin(np.pi * np.arange(n) / n) ** 0.5
        out[a:b] += (x * rms * 10 ** (db / 20) / np.sqrt(np.mean(x**2) + 1e-12)).astype(np.float32)
    return out


def equalise(audio: np.ndarray, gain_of_hz) -> np.ndarray:
    spectrum = np.fft.rfft(audio)
    hz = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)
    return np.fft.irfft(spectrum * gain_of_hz(hz), len(audio)).astype(np.float32)


def resample(audio: np.ndarray, phones, factor: float) -> tuple[np.ndarray, list]:
    """Formants and pitch x factor (played at the same rate: slower when factor < 1)."""
    import soxr

    out = soxr.resample(audio, SAMPLE_RATE, SAMPLE_RATE / factor).astype(np.float32)
    return out[: len(out) // 640 * 640], [(p, s / factor, e / factor) for p, s, e in phones]


def channel(audio: np.ndarray, **settings) -> np.ndarray:
    """The data engine's augmentation of one track with these settings (others off)."""
    from dystream.data import augment

    base = {"gain_db": 0.0, "snr_db": 60.0, "reverb_seconds": 0.0, "reverb_mix": 0.0, "low_hz": 0.0,
            "high_hz": 0.0, **settings}
    return augment.apply(audio, augment.PartyAugmentation(**base), np.random.default_rng(1))


def voice_cases(sentences) -> list:
    slt, slt_phones = speak("slt", sentences)
    awb, awb_phones = speak("awb", sentences)
    rms, rms_phones = speak("rms", sentences)
    return [
        ("slt", slt, slt_phones),
        ("slt, F0 110 Hz", *speak("slt", sentences, 110)),
        ("slt, F0 140 Hz", *speak("slt", sentences, 140)),
        ("slt, p/b/m attenuated 30 dB", attenuate(slt, slt_phones, -30), slt_phones),
        ("slt, p/b/m attenuated 15 dB", attenuate(slt, slt_phones, -15), slt_phones),
        ("slt, -10 dB", slt * np.float32(10 ** (-10 / 20)), slt_phones),
        ("slt, +6 dB", slt * np.float32(2.0), slt_phones),
        ("slt, -12 dB below 600 Hz", equalise(slt, lambda hz: np.where(hz < 600, 10 ** (-12 / 20), 1.0)), slt_phones),
        ("slt, tilt -3 dB/octave", equalise(slt, lambda hz: 10 ** (-3 * np.log2(np.maximum(hz, 50) / 1000) / 20)),
         slt_phones),
        ("slt, formants and pitch x 0.85", *resample(slt, slt_phones, 0.85)),
        ("slt, formants and pitch x 0.75", *resample(slt, slt_phones, 0.75)),
        ("slt, formants and pitch x 0.85, same tempo", *resample(*speak("slt", sentences, stretch=0.85), 0.85)),
        ("slt, formants x 0.85, same tempo and F0", *resample(*speak("slt", sentences, 172 / 0.85, 0.85), 0.85)),
        ("awb, formants and pitch x 1.18, same tempo", *resample(*speak("awb", sentences, stretch=1.18), 1.18)),
        ("rms, formants and pitch x 1.18, same tempo", *resample(*speak("rms", sentences, stretch=1.18), 1.18)),
        ("awb", awb, awb_phones),
        ("awb, F0 200 Hz", *speak("awb", sentences, 200)),
        ("awb, murmur at p/b/m (-6 dB, 150 Hz)", murmur(awb, awb_phones, -6, 150), awb_phones),
        ("awb, murmur at p/b/m (-12 dB, 150 Hz)", murmur(awb, awb_phones, -12, 150), awb_phones),
        ("rms", rms, rms_phones),
        ("rms, F0 200 Hz", *speak("rms", sentences, 200)),
        ("rms, murmur at p/b/m (-6 dB, 200 Hz)", murmur(rms, rms_phones, -6, 200), rms_phones),
    ]


def channel_cases(sentences) -> list:
    from dystream.data import augment

    cases = []
    for voice in ("slt", "awb"):
        audio, phones = speak(voice, sentences)
        audio = augment.level_speech(audio)
        cases += [
            (f"{voice}, levelled", audio, phones),
            (f"{voice}, noise at 25 dB SNR", channel(audio, snr_db=25.0), phones),
            (f"{voice}, room 0.4 s, mix 0.2", channel(audio, reverb_seconds=0.4, reverb_mix=0.2), phones),
            (f"{voice}, band 200-4500 Hz", channel(audio, low_hz=200.0, high_hz=4500.0), phones),
            (f"{voice}, -8 dB", channel(audio, gain_db=-8.0), phones),
            (f"{voice}, tape speed 0.97", *resample(audio, phones, 0.97)),
            (f"{voice}, typical (30 dB SNR, room 0.4 s x 0.2, -4 dB)",
             channel(audio, snr_db=30.0, reverb_seconds=0.4, reverb_mix=0.2, gain_db=-4.0), phones),
        ]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=120)
    parser.add_argument("--weights", help="generator weights (default: the bundled ones)")
    parser.add_argument("--data", help="a dataset with a test split, for the anchor frame (default: a neutral face)")
    parser.add_argument("--json", help="write the table here")
    parser.add_argument("--cases", choices=("voice", "channel"), default="voice",
                        help="voice: one property of the voice at a time (default); channel: the data "
                             "engine's recording channel, one part at a time")
    args = parser.parse_args()

    from dystream.data.text import sentence
    from dystream.generator.guidance import command_line_guidance
    from dystream.generator.inference import generate_motion_batch
    from dystream.generator.weights import load_generator
    from dystream.metrics import events
    from dystream.motion import neutral_frame as resting_face

    rng = np.random.default_rng(0)
    sentences = [sentence(rng, "test") for _ in range(args.sentences)]
    anchor = resting_face()
    if args.data:
        from dystream.data.schema import iter_conversations
        from dystream.evaluation.core import neutral_frame

        anchor = neutral_frame(next(iter(iter_conversations(args.data, "test"))), 0)
    if args.cases == "channel":
        cases = channel_cases(sentences)
    else:
        cases = voice_cases(sentences)
    model = load_generator(args.weights, "cpu")
    guidance, pose_guidance = command_line_guidance(None, None)
    items = [(audio, np.zeros_like(audio), anchor, 0) for _, audio, _ in cases]
    motions = generate_motion_batch(model, items, steps=5, guidance=guidance, pose_guidance=pose_guidance,
                                    device="cpu", batch_size=len(items))
    rows = {}
    print(f"{'audio':<56} {'closed':>8} {'rate':>6}")
    for (name, _, phones), motion in zip(cases, motions):
        closed, total = events.bilabial_closure_counts(motion, phones)
        rows[name] = {"closed": closed, "bilabials": total, "rate": closed / total}
        print(f"{name:<56} {closed:>4}/{total:<3} {closed / total:>6.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sentences": args.sentences, "weights": args.weights or "bundled", "cases": args.cases,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
