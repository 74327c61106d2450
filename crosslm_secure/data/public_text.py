"""Public English text that ships with Python (``pydoc_data.topics``): the same at every site.

The server measures the LLM's perplexity on it (the LLM is never tuned on it), and head-only
SLMs centre their features on the mean embedding of its paragraphs, so no private mean is used.
"""

from __future__ import annotations

from pydoc_data.topics import topics

PUBLIC_CENTRE_TEXTS = 400
"""Paragraphs of public English text whose mean embedding centres the SLM features."""


def general_text(max_chars: int | None = None) -> str:
    """General English text the LLM is never tuned on: Python's pydoc topics, sorted by name.

    Args:
        max_chars: cut the text to this many characters (None = all, ~460k characters).
    """
    text = "\n\n".join(topics[name].strip() for name in sorted(topics))
    return text if max_chars is None else text[:max_chars]


def public_texts(count: int = PUBLIC_CENTRE_TEXTS) -> list[str]:
    """Paragraphs of general English that ships with Python (``pydoc_data.topics``): public to every site."""
    paragraphs = [p.strip() for p in general_text(400_000).split("\n\n")]
    return [p for p in paragraphs if len(p) > 40][:count]
