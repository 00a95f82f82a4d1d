"""Make the bundled demo conversation: two voices, ~16 s, each party on its own wav.

The pictured person ("self") is flite's slt and the partner ("other") flite's
kal16: both are voices the generator never hears in training. Re-run with
`python scripts/make_demo_audio.py` (needs flite); it writes
dystream/assets/demo_self.wav and demo_other.wav.
"""

from pathlib import Path

from dystream.audio.io import save_wav
from dystream.data.synth import PlannedConversation, SynthSettings, generate_conversation

ASSETS = Path(__file__).resolve().parents[1] / "dystream" / "assets"


def main(seed: int = 19, seconds: float = 16.0) -> None:
    settings = SynthSettings(seed=seed, engines=["flite"])
    voices = {"test": ["flite:slt", "flite:kal16"]}
    conv = generate_conversation(PlannedConversation("test", 0, seconds), settings, voices)
    # Party A is the pictured person when its voice is slt; otherwise swap.
    a, b = (0, 1) if conv.voices[0] == "flite:slt" else (1, 0)
    save_wav(ASSETS / "demo_self.wav", conv.audio[a])
    save_wav(ASSETS / "demo_other.wav", conv.audio[b])
    print(f"{conv.id}: {conv.duration:.1f} s; self={conv.voices[a]} other={conv.voices[b]}; "
          f"self speaks {conv.speaking(a).mean():.0%} of frames, other {conv.speaking(b).mean():.0%}")


if __name__ == "__main__":
    main()
