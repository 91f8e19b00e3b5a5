"""The server's Prometheus metrics (prometheus-client): requests by status, latency, batch sizes, queue depth.

Each app has its own registry (tests make several apps in one process). Under `--workers N` the parent sets
PROMETHEUS_MULTIPROC_DIR, every worker writes its values there, and /metrics sums all workers' values.
"""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """Every metric the server records, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("bearrec_requests", "HTTP requests answered, by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("bearrec_request_seconds", "Time from a request's arrival to its answer",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("bearrec_batch_size", "Histories decoded in one search", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.decode_seconds = Histogram("bearrec_decode_seconds", "Time of one batched search",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("bearrec_queue_depth", "Histories waiting for a batch", registry=r,
                                 multiprocess_mode="livesum")
        self.dropped = Counter("bearrec_dropped", "Histories dropped before decoding, by reason "
                               "(disconnected, deadline)", ["reason"], registry=r)
        self.rejected = Counter("bearrec_rejected", "Histories refused because the queue was full", registry=r)

    def render(self) -> bytes:
        """The exposition text: this process's registry, or every worker's when running several."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)
