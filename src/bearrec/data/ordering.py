"""The one fixed order used whenever timestamps tie: ids compare as integers when numeric, else as text."""
from __future__ import annotations

from typing import Iterable

TIE_BREAK_RULE = ("rows and interactions are ordered by timestamp; ties are broken by user id, then item id "
                  "(ids that are all ASCII digits compare as integers and come before other ids, which "
                  "compare as strings), then by position in the user's sequence")


def id_sort_key(item_id: str) -> tuple[int, int, str]:
    """Key that sorts numeric ids numerically ("2" < "10") and puts them before non-numeric ids."""
    if item_id.isascii() and item_id.isdigit():
        return (0, int(item_id), item_id)
    return (1, 0, item_id)


def id_ranks(ids: Iterable[str]) -> dict[str, int]:
    """Map each distinct id to its rank under id_sort_key, so tables can sort on an integer column."""
    return {value: rank for rank, value in enumerate(sorted(set(ids), key=id_sort_key))}
