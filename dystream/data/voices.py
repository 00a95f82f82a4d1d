"""The voices of the synthetic speakers, and which split each belongs to.

A voice id is ``engine:name``. Voices are split so that no speaker is heard in
two splits; the test split keeps at least two voices that training never hears.
flite's ``kal`` and ``kal16`` are one speaker (Kal) at two sample rates, so
only ``kal16`` is used.

Two voice sets exist:

* ``flite,espeak`` (default): 4 flite speakers + 37 espeak-ng speakers
  (espeak-ng is GPL; it runs in a separate process and is never imported by the
  core; ``pip install espeakng-loader`` provides it).
* ``flite``: the 4 flite speakers only; the test split then has 1 unseen voice.
"""

from __future__ import annotations

from dystream.errors import InputError

FLITE_SPLITS = {
    "train": ["flite:awb", "flite:rms"],
    "val": ["flite:kal16"],
    "test": ["flite:slt"],
}
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
ENGINES = ("flite", "espeak")


def voices_by_split(engines: tuple[str, ...] | list[str] = ENGINES) -> dict[str, list[str]]:
    """Voices per split for the chosen engines (disjoint between splits)."""
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise InputError(f"unknown engine(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ENGINES)}")
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for engine, table in (("flite", FLITE_SPLITS), ("espeak", ESPEAK_SPLITS)):
        if engine in engines:
            for split, voices in table.items():
                out[split] += voices
    if not out["train"]:
        raise InputError("the training split needs flite voices; add flite to --engines")
    return out


def known_voices() -> list[str]:
    return [v for table in (FLITE_SPLITS, ESPEAK_SPLITS) for vs in table.values() for v in vs]


def check_engines(engines: tuple[str, ...] | list[str]) -> None:
    """Fail early, with the fix, when an engine the voices need is missing."""
    if "flite" in engines:
        from dystream.data.tts import flite

        available = flite.available_voices()
        for split in FLITE_SPLITS.values():
            for voice in split:
                name = voice.split(":", 1)[1]
                if name not in available:
                    raise InputError(f"this flite has no voice {name!r} (it has {', '.join(available)}); "
                                     "install the Debian package flite 2.2, which includes it")
    if "espeak" in engines:
        from dystream.data.tts import espeak

        espeak.check_available()
