"""`bearrec serve` as a real process on loopback: many concurrent clients each get the answer of their history alone
(in shared batches), a client that leaves is dropped from its batch, SIGTERM answers the requests in flight, refuses
new ones and exits 0, and --workers 2 serves from two processes. Every request goes to 127.0.0.1; counts are bounded."""
from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bearrec.recommend import Recommender
from serve_process import ServerProcess

BEAMS = 5


def metric(text: str, name: str) -> float:
    """The value of one sample line of a Prometheus exposition text (0 when absent)."""
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(match[1]) if match else 0.0


@pytest.fixture(scope="module")
def reference(small_run):
    """Each history's list as `bearrec recommend --histories` gives it for that history alone (a batch of one)."""
    rec = Recommender.from_run(small_run, device="cpu", on_dataset_change="warn")
    rng, ids = random.Random(5), list(rec.items)
    found = {}
    for _ in range(48):
        history = tuple(rng.sample(ids, rng.randint(1, 5)))
        found[history] = rec.recommend(list(history), k=BEAMS, num_beams=BEAMS)
    return found


def test_concurrent_clients_each_get_their_own_answer(small_run, reference):
    with ServerProcess(small_run, ["--num-beams", str(BEAMS), "--max-batch-size", "8", "--max-wait-ms", "20",
                                   "--device", "cpu"]) as server:
        work = [h for h in reference for _ in range(2)]
        random.Random(0).shuffle(work)

        def ask(history):
            with httpx.Client(base_url=server.url, timeout=60) as c:
                return history, c.post("/v1/recommend", json={"history": list(history), "k": BEAMS})

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(ask, work))
        metrics = httpx.get(f"{server.url}/metrics").text
    for history, response in answers:
        assert response.status_code == 200, response.text
        served = response.json()["recommendations"]
        want = reference[history]
        assert [e["item_ids"] for e in served] == [e["item_ids"] for e in want], history
        assert [e["score"] for e in served] == pytest.approx([e["score"] for e in want], abs=1e-4)
    batches = metric(metrics, "bearrec_batch_size_count")
    assert metric(metrics, "bearrec_batch_size_sum") == len(work)
    assert batches < len(work) / 2, f"{len(work)} requests in {batches} batches: they were not grouped"
    assert metric(metrics, 'bearrec_requests_total{endpoint="/v1/recommend",status="200"}') == len(work)


def raw_request(url: str, body: dict) -> socket.socket:
    """A socket that has sent one POST /v1/recommend and not read the answer."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
    return sock


def test_a_client_that_leaves_is_dropped_and_sigterm_drains(small_run, reference):
    history = list(next(iter(reference)))
    server = ServerProcess(small_run, ["--num-beams", str(BEAMS), "--max-batch-size", "8", "--max-wait-ms", "1500",
                                       "--device", "cpu"])
    try:
        # a client sends its request and leaves while the batch is still filling: it is never decoded
        raw_request(server.url, {"history": history}).close()
        time.sleep(0.3)
        answer = httpx.post(f"{server.url}/v1/recommend", json={"history": history, "k": BEAMS}, timeout=30)
        assert answer.status_code == 200
        metrics = httpx.get(f"{server.url}/metrics").text
        assert metric(metrics, 'bearrec_dropped_total{reason="disconnected"}') == 1
        assert metric(metrics, "bearrec_batch_size_sum") == 1 and metric(metrics, "bearrec_batch_size_count") == 1

        # SIGTERM while three requests wait for their batch: they are answered, new connections are refused, exit 0
        results: list[httpx.Response] = []

        def ask() -> None:
            results.append(httpx.post(f"{server.url}/v1/recommend", json={"history": history, "k": BEAMS},
                                      timeout=30))

        clients = [threading.Thread(target=ask) for _ in range(3)]
        for c in clients:
            c.start()
        time.sleep(0.5)
        server.proc.send_signal(15)
        time.sleep(0.4)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/healthz", timeout=5)
        for c in clients:
            c.join(30)
        assert server.proc.wait(30) == 0, server.output
    finally:
        server.kill()
    assert [r.status_code for r in results] == [200, 200, 200]
    assert all(r.json()["recommendations"] == answer.json()["recommendations"] for r in results)
    assert "Traceback" not in server.output


@pytest.mark.slow
def test_two_workers_serve_and_sum_their_metrics(small_run, reference):
    import psutil

    with ServerProcess(small_run, ["--num-beams", str(BEAMS), "--workers", "2", "--device", "cpu,cpu"]) as server:
        workers = [p for p in psutil.Process(server.proc.pid).children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2
        items = list(reference.items())[:12]

        def ask(pair):
            history, want = pair
            with httpx.Client(base_url=server.url, timeout=60) as c:
                served = c.post("/v1/recommend", json={"history": list(history), "k": BEAMS}).json()
            return [e["item_ids"] for e in served["recommendations"]] == [e["item_ids"] for e in want]

        with ThreadPoolExecutor(6) as pool:
            assert all(pool.map(ask, items))
        metrics = httpx.get(f"{server.url}/metrics").text
        assert metric(metrics, 'bearrec_requests_total{endpoint="/v1/recommend",status="200"}') == len(items)
        code = server.terminate()
    assert code == 0, server.output
