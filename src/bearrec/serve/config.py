"""The server's options, and how they travel to worker processes (one environment variable of JSON)."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields

from ..errors import ConfigError

ENV = "BEARREC_SERVE_CONFIG"  # worker processes read their options here (set by the parent before it spawns them)


@dataclass(frozen=True)
class ServeConfig:
    """What `bearrec serve` was asked for; every field has the command line's default."""

    run_dir: str
    host: str = "127.0.0.1"
    port: int = 8000
    num_beams: int = 10  # beams of every beam search, and the largest k a request may ask for
    search: str = "beam"  # a request's search when it names none: "beam" or "exact"
    max_batch_size: int = 32  # histories decoded in one search
    max_wait_ms: float = 5.0  # how long the oldest waiting request may wait for its batch to fill
    max_queue: int = 1024  # histories waiting to be decoded; more get 503
    request_timeout_s: float = 30.0  # a request not answered by then gets 504
    max_body_bytes: int = 1 << 20  # larger bodies get 413
    max_history: int = 1000  # item ids in one history
    max_batch_histories: int = 256  # histories in one /v1/recommend:batch call
    max_expansions: int = 2000  # exact search: model evaluations per history before it stops uncertified
    device: str | None = None  # None: the GPU when there is one; "cuda:0,cuda:1" spreads workers over devices
    workers: int = 1

    def __post_init__(self) -> None:
        if self.search not in ("beam", "exact"):
            raise ConfigError(f"search must be beam or exact, got {self.search!r}. Fix: --search beam.")
        for name in ("num_beams", "max_batch_size", "max_queue", "max_body_bytes", "max_history",
                     "max_batch_histories", "max_expansions", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.max_wait_ms < 0 or self.request_timeout_s <= 0:
            raise ConfigError("max_wait_ms must be >= 0 and request_timeout_s > 0.")

    def devices(self) -> list[str | None]:
        """The devices workers are spread over, one per worker in turn (`--device cuda:0,cuda:1`)."""
        if self.device is None:
            return [None]
        return [d.strip() for d in self.device.split(",") if d.strip()] or [None]

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServeConfig":
        """The options the parent process left in BEARREC_SERVE_CONFIG."""
        text = os.environ.get(ENV)
        if not text:
            raise ConfigError(f"{ENV} is not set: this factory is for the workers `bearrec serve` starts. "
                              "Fix: run `bearrec serve RUN_DIR`.")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})
