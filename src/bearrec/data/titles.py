"""Item titles: unescape HTML entities, decide whether a raw title is usable as an LLM target, and name untitled items.

An item without a usable title is handled by the `untitled` option of every format: "keep" gives it the
placeholder title "unknown item <item id>" (distinct per item, so the catalog's titles still tell items
apart) and names it in stats["notes"]; "drop" removes it together with every row or interaction that
mentions it, counted in stats["dropped"]. Either way stats["untitled_items"] counts such items by reason.
"""
from __future__ import annotations

import html
import re
from collections import Counter
from typing import Mapping

DEFAULT_MAX_TITLE_LENGTH = 200

# Markup left over from scraping (Amazon 2018 metadata holds titles such as '<span id="productTitle">...').
_HTML_REMNANT = re.compile(r"<\s*/?\s*[a-zA-Z][\w-]*(\s|>|/|$)")

# Why a title is unusable; these names become stats["dropped"] keys ("items_" + reason).
MISSING, EMPTY, HTML, TOO_LONG = "without_title", "with_empty_title", "with_html_title", "with_too_long_title"
# A title the source itself marks as unknown (MovieLens' movie "unknown"), which its reader keeps under that title.
UNKNOWN = "with_unknown_title"

UNTITLED_POLICIES = ("keep", "drop")
PLACEHOLDER_TITLE = "unknown item {item_id}"


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


def placeholder_title(item_id: str) -> str:
    """The title an item without a usable title is kept under when untitled='keep'."""
    return PLACEHOLDER_TITLE.format(item_id=item_id)


def untitled_summary(policy: str, reasons: Mapping[str, str], kept: int) -> dict:
    """stats["untitled_items"]: the policy, how many items had no usable title (by reason), how many were kept."""
    return {"policy": policy, "found": len(reasons), "kept": kept,
            "by_reason": dict(sorted(Counter(reasons.values()).items()))}


def untitled_note(kept: list[str]) -> str:
    """The stats["notes"] line naming the items kept under a placeholder title."""
    shown = ", ".join(kept[:10]) + (f" and {len(kept) - 10} more" if len(kept) > 10 else "")
    placeholder = PLACEHOLDER_TITLE.format(item_id="<id>")
    return (f"{len(kept)} item(s) without a usable title were kept under the placeholder title '{placeholder}' "
            f"(item ids: {shown}); untitled='drop' (--untitled drop) removes them with the rows that mention them")
