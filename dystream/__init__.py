"""dystream: real-time, streaming, dyadic talking-head generation."""

__version__ = "0.1.0"
