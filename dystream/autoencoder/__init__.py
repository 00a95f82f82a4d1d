"""Autoencoders: split a photo into appearance and motion, and render motion back on it."""

from dystream.autoencoder.base import Autoencoder, load_autoencoder

__all__ = ["Autoencoder", "load_autoencoder"]
