"""Item titles: unescape HTML entities and decide whether a raw title is usable as an LLM target."""
from __future__ import annotations

import html
import re

DEFAULT_MAX_TITLE_LENGTH = 200

# Markup left over from scraping (Amazon 2018 metadata holds titles such as '<span id="productTitle">...').
_HTML_REMNANT = re.compile(r"<\s*/?\s*[a-zA-Z][\w-]*(\s|>|/|$)")

# Why a title is unusable; these names become stats["dropped"] keys ("items_" + reason).
MISSING, EMPTY, HTML, TOO_LONG = "without_title", "with_empty_title", "with_html_title", "with_too_long_title"


def unescape_title(raw: str) -> str:
    """Decode HTML entities (&amp; -> &), keeping the rest of the text exactly as published."""
    return html.unescape(raw)


def clean_title(raw: object, max_length: int | None = DEFAULT_MAX_TITLE_LENGTH) -> tuple[str | None, str | None]:
    """Return (title, None) for a usable title, else (None, reason) with one of the reason constants."""
    if raw is None or not isinstance(raw, str):
        return None, MISSING
    title = unescape_title(raw).strip()
    if not title:
        return None, EMPTY
    if _HTML_REMNANT.search(title):
        return None, HTML
    if max_length is not None and len(title) > max_length:
        return None, TOO_LONG
    return title, None
