"""Request and response bodies (pydantic): their checks give the 422 answers and the OpenAPI document.

The bounds (largest k, history length, histories per batch call) are the server's options, so the request models
are made per app by `request_models`.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt


def _item_id(value: Any) -> str:
    """Item ids are strings; integers are read as their decimal string (as `bearrec recommend` reads them)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"item ids are strings (or integers), got {type(value).__name__} {value!r:.40}")
    return str(value)


ItemId = Annotated[str, BeforeValidator(_item_id)]
Search = Literal["beam", "exact"]


class RunRef(BaseModel):
    """The run an answer comes from: its directory's name and the SHA-256 of its model's manifest."""

    name: str
    model_id: str | None = None


class Entry(BaseModel):
    """One recommended title with every catalog item carrying it, as `Recommender.recommend` gives it."""

    item_ids: list[str]
    title: str
    score: float = Field(description="log-probability of the title's tokens (normalised as the search does)")
    certified: bool | None = Field(None, description="exact search only: the list is proved to be the exact top-k")


class RecommendResponse(BaseModel):
    run: RunRef
    search: Search
    k: int
    num_beams: int | None = Field(None, description="beam search only: the beams of the search")
    recommendations: list[Entry]


class BatchResponse(BaseModel):
    run: RunRef
    search: Search
    k: int
    num_beams: int | None = None
    results: list[list[Entry]] = Field(description="one list per history, in the order given")


class CatalogItem(BaseModel):
    item_id: str
    title: str


class ItemsResponse(BaseModel):
    run: RunRef
    query: str
    total: int = Field(description="items matching the query (only the first `limit` are listed)")
    items: list[CatalogItem]


class InfoResponse(BaseModel):
    run: RunRef
    items: int
    num_beams: int
    max_k: int
    default_k: int
    searches: list[Search]
    default_search: Search
    max_batch_size: int
    device: str


class ErrorDetail(BaseModel):
    field: str | None = Field(description="where the problem is: body, history, history[2], k, ...")
    message: str


class ErrorResponse(BaseModel):
    status: int
    errors: list[ErrorDetail]
    run: RunRef
    unknown_ids: list[str] | None = None


def request_models(max_k: int, default_k: int, max_history: int, max_histories: int) -> tuple[type, type]:
    """(RecommendRequest, BatchRequest) with this server's bounds."""
    History = Annotated[list[ItemId], Field(min_length=1, max_length=max_history)]
    K = Annotated[StrictInt, Field(ge=1, le=max_k, description=f"how many titles to return (1 to {max_k})")]

    class RecommendRequest(BaseModel):
        """One user's history (item ids, oldest first)."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"history": ["15", "42"], "k": 10}]})
        history: History
        k: K = default_k
        search: Search | None = Field(None, description="beam (constrained beam search) or exact (the k most "
                                                        "probable titles); default: the server's --search")

    class BatchRequest(BaseModel):
        """Several histories answered with the same k and search."""

        model_config = ConfigDict(extra="forbid",
                                  json_schema_extra={"examples": [{"histories": [["15", "42"], ["7"]], "k": 5}]})
        histories: list[History] = Field(min_length=1, max_length=max_histories)
        k: K = default_k
        search: Search | None = None

    return RecommendRequest, BatchRequest
