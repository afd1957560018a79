"""Text shortened for a message: a long command, a server's reply, a config value."""

from __future__ import annotations


def clip(text: str, limit: int = 200) -> str:
    """`text` cut to at most `limit` characters, the cut shown by an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
