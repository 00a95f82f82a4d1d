"""The voices of the synthetic speakers, and which split each belongs to.

A voice id is ``engine:name``. Voices are split so that no speaker is heard in
two splits; the test split keeps at least two voices that training never hears.
flite's ``kal`` and ``kal16`` are one speaker (Kal) at two sample rates, so
only ``kal16`` is used (in training; Festival's kal is the same man and is not used).

The recorded-speech voices (flite, Festival) are the scarce ones: the model
learns lips from many espeak-ng voices easily but hears a new recorded voice
less well, so training gets three of them (flite awb, rms, kal16), validation
one (Festival's ked) and the test split one (flite slt).

Engines (``--engines``, default ``flite,espeak,festival``):

* ``flite``: 4 speakers (BSD-style; Debian ``flite``).
* ``espeak``: 37 espeak-ng speakers (GPL; runs in a separate process, never
  imported by the core; ``pip install espeakng-loader``).
* ``festival``: ked, the validation split's recorded voice (Debian ``festival``
  and ``festvox-kdlpc16k``).

A split that gets hours needs at least one voice from the chosen engines;
``--exclude-voices`` leaves named voices out (e.g. to compare training sets).
"""

from __future__ import annotations

from dystream.errors import InputError

FLITE_SPLITS = {
    "train": ["flite:awb", "flite:rms", "flite:kal16"],
    "val": [],
    "test": ["flite:slt"],
}
FESTIVAL_SPLITS: dict[str, list[str]] = {"train": [], "val": ["festival:ked"], "test": []}
# Festival voices of other languages (female, recorded speech) that read English with their
# own letter-to-sound rules: in no split by default (a third of the training parties speaking
# accented English cost lip closure, docs/generator.md); `--add-train-voices` trains on them.
FESTIVAL_EXTRA = ["festival:lp", "festival:upc_ca_ona", "festival:suo_fi_lj"]
# espeak-ng language (accent) + variant (speaker: formants, pitch, voice quality)
_TRAIN_ACCENTS = ("en-us", "en", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
# More speakers for training: espeak-ng's community variants (each a formant set,
# pitch range and voice quality), spread over the training accents. The val and
# test variants (f3, f4, m7) and accents (scotland, rp, 029) stay out.
_MORE_TRAIN_VARIANTS = ("m4", "m5", "m8", "Alex", "Andy", "Annie", "adam", "benjamin", "david", "ed",
                        "edward", "linda", "max", "paul", "robert", "steph", "travis", "Lee", "belinda",
                        "aunty", "grandma", "grandpa", "quincy", "michel", "Denis", "Gene", "Mike")
ESPEAK_SPLITS = {
    "train": ["espeak:en-us+m1", "espeak:en+f2", "espeak:en-us-nyc+m3",
              "espeak:en-us+f5", "espeak:en-gb-x-gbcwmd+m2", "espeak:en-us+m6", "espeak:en+f1"]
    + [f"espeak:{_TRAIN_ACCENTS[i % len(_TRAIN_ACCENTS)]}+{v}" for i, v in enumerate(_MORE_TRAIN_VARIANTS)],
    "val": ["espeak:en-gb-scotland+f4"],
    "test": ["espeak:en-gb-x-rp+f3", "espeak:en-029+m7"],
}
ENGINES = ("flite", "espeak", "festival")
_TABLES = (("flite", FLITE_SPLITS), ("espeak", ESPEAK_SPLITS), ("festival", FESTIVAL_SPLITS))


def voices_by_split(engines: tuple[str, ...] | list[str] = ENGINES,
                    exclude: tuple[str, ...] | list[str] = (),
                    add_train: tuple[str, ...] | list[str] = ()) -> dict[str, list[str]]:
    """Voices per split for the chosen engines (disjoint between splits), less ``exclude``,
    plus ``add_train`` (voices of no split, e.g. ``FESTIVAL_EXTRA``) in training."""
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise InputError(f"unknown engine(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ENGINES)}")
    strangers = [v for v in exclude if v not in known_voices()]
    if strangers:
        raise InputError(f"--exclude-voices: unknown voice(s) {', '.join(strangers)}; "
                         f"known voices: {', '.join(known_voices())}")
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for engine, table in _TABLES:
        if engine in engines:
            for split, voices in table.items():
                out[split] += [v for v in voices if v not in exclude]
    for voice in add_train:
        if voice not in FESTIVAL_EXTRA:
            where = "it is already in a split" if voice in known_voices() else "it is not a voice we know"
            raise InputError(f"--add-train-voices: cannot add {voice!r} ({where}); "
                             f"voices that can be added: {', '.join(FESTIVAL_EXTRA)}")
        if voice.split(":", 1)[0] not in engines:
            raise InputError(f"--add-train-voices {voice}: add its engine to --engines")
        if voice not in out["train"]:
            out["train"].append(voice)
    if not out["train"]:
        raise InputError("the training split has no voices; add flite to --engines (or exclude fewer voices)")
    return out


def check_split_voices(voices: dict[str, list[str]], hours: dict[str, float]) -> None:
    """Every split that gets hours has a voice; the error names the engines that would give it one."""
    for split, pool in voices.items():
        if hours.get(split, 0.0) > 0 and not pool:
            engines = sorted({v.split(":", 1)[0] for _, table in _TABLES for v in table[split]})
            raise InputError(f"the {split} split has no voice with these engines; add {' or '.join(engines)} "
                             f"to --engines, or give it no hours (--split-hours {split}=0,...)")


def known_voices() -> list[str]:
    return [v for _, table in _TABLES for vs in table.values() for v in vs]


# The Debian package that holds each Festival voice (for the error that names the fix).
_FESTIVAL_PACKAGES = {"ked": "festvox-kdlpc16k", "lp": "festvox-italp16k", "upc_ca_ona": "festvox-ca-ona-hts",
                      "suo_fi_lj": "festvox-suopuhe-lj"}


def check_engines(voices: list[str]) -> None:
    """Fail early, with the fix, when an engine or voice that ``voices`` need is missing."""
    engines = {v.split(":", 1)[0] for v in voices}
    names = {engine: [v.split(":", 1)[1] for v in voices if v.startswith(engine + ":")] for engine in engines}
    if "flite" in engines:
        from dystream.data.tts import flite

        available = flite.available_voices()
        for name in names["flite"]:
            if name not in available:
                raise InputError(f"this flite has no voice {name!r} (it has {', '.join(available)}); "
                                 "install the Debian package flite 2.2, which includes it")
    if "espeak" in engines:
        from dystream.data.tts import espeak

        espeak.check_available()
    if "festival" in engines:
        from dystream.data.tts import festival

        available = festival.available_voices()
        for name in names["festival"]:
            if name not in available:
                package = _FESTIVAL_PACKAGES.get(name, "that carries it")
                raise InputError(f"this Festival has no voice {name!r} (it has {', '.join(available) or 'none'}); "
                                 f"install the Debian package {package}, leave the voice out with "
                                 f"--exclude-voices festival:{name}, or Festival with --engines flite,espeak")
