"""Photo and audio in, frames out: the product path (``Pipeline``) and its pieces."""

from dystream.pipeline.pipeline import Avatar, Pipeline

__all__ = ["Avatar", "Pipeline"]
