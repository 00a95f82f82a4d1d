"""Measuring functions: the one definition of every event and score (see events.py)."""
