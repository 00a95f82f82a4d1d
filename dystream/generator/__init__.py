"""The DyStream audio-to-motion generator: causal audio encoders, a sliding-window
causal transformer and a flow-matching head (see docs/generator.md)."""
