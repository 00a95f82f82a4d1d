"""Streaming inference: feed audio chunks of any size, get frames as soon as they can be made."""

from dystream.streaming.session import StreamFrame, StreamingSession

__all__ = ["StreamFrame", "StreamingSession"]
