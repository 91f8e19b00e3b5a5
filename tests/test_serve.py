"""`bearrec serve` in process (FastAPI's TestClient): answers equal `bearrec recommend --histories` for each history
alone, a matrix of bad requests each answered with its status and the field named, queue-full 503 and deadline 504,
catalog look-up, metrics, OpenAPI, the start-up refusal of a damaged run, and the batcher on its own."""
from __future__ import annotations

import asyncio
import io
import json
import random
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bearrec.cli import main
from bearrec.recommend import Recommender
from bearrec.serve.app import create_app
from bearrec.serve.batcher import Batcher, QueueFull
from bearrec.serve.config import ServeConfig
from bearrec.serve.engine import Engine
from run_fixtures import copy_run

BEAMS = 6


@pytest.fixture(scope="module")
def engine(small_run) -> Engine:
    return Engine.load(ServeConfig(run_dir=str(small_run), num_beams=BEAMS, device="cpu", max_history=50,
                                   max_batch_histories=8, max_body_bytes=4096), device="cpu")


def client_of(engine: Engine, **options) -> TestClient:
    return TestClient(create_app(replace(engine.config, **options), engine))


@pytest.fixture(scope="module")
def client(engine):
    with client_of(engine) as c:
        yield c


def histories(engine: Engine, n: int, seed: int = 0) -> list[list[str]]:
    """The dataset's own histories, then random ones of 1 to 6 items."""
    rec = engine.views["beam"]
    rows = [list(r.history) for r in rec.dataset.split("test") + rec.dataset.split("valid")]
    rng, ids = random.Random(seed), list(engine.items)
    return (rows + [rng.sample(ids, rng.randint(1, 6)) for _ in range(n)])[:n]


def recommend_alone(run: Path, tmp_path: Path, history: list[str], k: int, search: str = "beam") -> list[dict]:
    """What `bearrec recommend RUN --histories FILE --num-beams k [--search exact]` writes for a file of one history."""
    source, output = tmp_path / "one.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"history": history}) + "\n")
    args = ["recommend", str(run), "--histories", str(source), "--output", str(output), "--num-beams", str(k),
            "--search", search, "--device", "cpu"]
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert main(args) == 0
    (record,) = [json.loads(line) for line in output.read_text().splitlines()]
    return record["recommendations"]


def same_list(served: list[dict], reference: list[dict]) -> None:
    """Items, titles and order equal; scores equal up to the last digits (left padding in a batch)."""
    assert [(e["item_ids"], e["title"]) for e in served] == [(e["item_ids"], e["title"]) for e in reference]
    assert [e["score"] for e in served] == pytest.approx([e["score"] for e in reference], abs=1e-4)


# ---------------------------------------------------------------------------------------------------------- parity
def test_answers_equal_bearrec_recommend_for_each_history_alone(engine, client, small_run, tmp_path):
    for history in histories(engine, 4, seed=1):
        reference = recommend_alone(small_run, tmp_path, history, BEAMS)
        body = client.post("/v1/recommend", json={"history": history, "k": BEAMS}).json()
        same_list(body["recommendations"], reference)
        assert body["run"] == {"name": small_run.name, "model_id": engine.run.model_id} and body["num_beams"] == BEAMS
        # a smaller k is the first k of the same search (every beam search has the server's beams)
        short = client.post("/v1/recommend", json={"history": history, "k": 2}).json()["recommendations"]
        same_list(short, reference[:2])
    history = histories(engine, 1, seed=2)[0]
    exact = client.post("/v1/recommend", json={"history": history, "k": 4, "search": "exact"}).json()
    reference = recommend_alone(small_run, tmp_path, history, 4, search="exact")
    same_list(exact["recommendations"], reference)
    assert all(e["certified"] is True for e in exact["recommendations"]) and "num_beams" not in exact


def test_a_batch_answers_each_history_as_alone(engine, client):
    rec = Recommender.from_run(engine.config.run_dir, device="cpu")
    many = histories(engine, 8, seed=3)
    body = client.post("/v1/recommend:batch", json={"histories": many, "k": 5}).json()
    assert len(body["results"]) == len(many) and body["search"] == "beam"
    for history, served in zip(many, body["results"]):
        same_list(served, rec.recommend(history, k=5, num_beams=BEAMS))
    # integers are item ids too, as `bearrec recommend` reads them
    as_ints = client.post("/v1/recommend", json={"history": [int(i) for i in many[0]], "k": 5}).json()
    same_list(as_ints["recommendations"], body["results"][0])


# ----------------------------------------------------------------------------------------------- bad requests
LONG = [str(i % 24) for i in range(51)]  # over max_history=50
BAD = [
    # (name, method, path, JSON body or raw bytes, content type, status, field)
    ("malformed JSON", "POST", "/v1/recommend", b'{"history": ["1"', "application/json", 422, "body"),
    ("trailing comma", "POST", "/v1/recommend", b'{"history": ["1"],}', "application/json", 422, "body"),
    ("empty body", "POST", "/v1/recommend", b"", "application/json", 422, "body"),
    ("a list for a body", "POST", "/v1/recommend", [["1"]], None, 422, "body"),
    ("a string for a body", "POST", "/v1/recommend", "1", None, 422, "body"),
    ("not JSON content", "POST", "/v1/recommend", b'{"history": ["1"]}', "text/plain", 422, "body"),
    ("history missing", "POST", "/v1/recommend", {"k": 3}, None, 422, "history"),
    ("history a string", "POST", "/v1/recommend", {"history": "1"}, None, 422, "history"),
    ("history a number", "POST", "/v1/recommend", {"history": 5}, None, 422, "history"),
    ("history null", "POST", "/v1/recommend", {"history": None}, None, 422, "history"),
    ("history an object", "POST", "/v1/recommend", {"history": {"1": 1}}, None, 422, "history"),
    ("history empty", "POST", "/v1/recommend", {"history": []}, None, 422, "history"),
    ("history too long", "POST", "/v1/recommend", {"history": LONG}, None, 422, "history"),
    ("id a float", "POST", "/v1/recommend", {"history": ["1", 2.5]}, None, 422, "history[1]"),
    ("id a bool", "POST", "/v1/recommend", {"history": [True]}, None, 422, "history[0]"),
    ("id null", "POST", "/v1/recommend", {"history": ["1", None]}, None, 422, "history[1]"),
    ("id a list", "POST", "/v1/recommend", {"history": [["1"]]}, None, 422, "history[0]"),
    ("id an object", "POST", "/v1/recommend", {"history": [{"id": "1"}]}, None, 422, "history[0]"),
    ("unknown id", "POST", "/v1/recommend", {"history": ["1", "nope"]}, None, 422, "history"),
    ("unknown ids", "POST", "/v1/recommend", {"history": ["x1", "2", "x2", 999]}, None, 422, "history"),
    ("k zero", "POST", "/v1/recommend", {"history": ["1"], "k": 0}, None, 422, "k"),
    ("k negative", "POST", "/v1/recommend", {"history": ["1"], "k": -3}, None, 422, "k"),
    ("k over the beams", "POST", "/v1/recommend", {"history": ["1"], "k": BEAMS + 1}, None, 422, "k"),
    ("k a string", "POST", "/v1/recommend", {"history": ["1"], "k": "3"}, None, 422, "k"),
    ("k a float", "POST", "/v1/recommend", {"history": ["1"], "k": 2.5}, None, 422, "k"),
    ("k null", "POST", "/v1/recommend", {"history": ["1"], "k": None}, None, 422, "k"),
    ("k a bool", "POST", "/v1/recommend", {"history": ["1"], "k": True}, None, 422, "k"),
    ("unknown search", "POST", "/v1/recommend", {"history": ["1"], "search": "greedy"}, None, 422, "search"),
    ("search a number", "POST", "/v1/recommend", {"history": ["1"], "search": 1}, None, 422, "search"),
    ("unknown field", "POST", "/v1/recommend", {"history": ["1"], "user": "u1"}, None, 422, "user"),
    ("body too large", "POST", "/v1/recommend", {"history": ["1"] * 1500}, None, 413, "body"),
    ("GET on recommend", "GET", "/v1/recommend", None, None, 405, None),
    ("histories a list of ids", "POST", "/v1/recommend:batch", {"histories": ["1", "2"]}, None, 422, "histories[0]"),
    ("histories empty", "POST", "/v1/recommend:batch", {"histories": []}, None, 422, "histories"),
    ("a history empty", "POST", "/v1/recommend:batch", {"histories": [["1"], []]}, None, 422, "histories[1]"),
    ("a batch id a float", "POST", "/v1/recommend:batch", {"histories": [["1"], ["2", 0.5]]}, None, 422,
     "histories[1][1]"),
    ("a batch id unknown", "POST", "/v1/recommend:batch", {"histories": [["1"], ["2"], ["zz"]]}, None, 422,
     "histories[2]"),
    ("too many histories", "POST", "/v1/recommend:batch", {"histories": [["1"]] * 9}, None, 422, "histories"),
    ("batch k too large", "POST", "/v1/recommend:batch", {"histories": [["1"]], "k": 99}, None, 422, "k"),
    ("limit zero", "GET", "/v1/items?limit=0", None, None, 422, "limit"),
    ("limit a word", "GET", "/v1/items?limit=many", None, None, 422, "limit"),
    ("limit too large", "GET", "/v1/items?limit=100000", None, None, 422, "limit"),
    ("query too long", "GET", "/v1/items?query=" + "a" * 201, None, None, 422, "query"),
    ("unknown path", "GET", "/v2/recommend", None, None, 404, None),
]


@pytest.mark.parametrize("name, method, path, body, content_type, status, field", BAD, ids=[b[0] for b in BAD])
def test_a_bad_request_gets_its_status_and_names_the_field(client, engine, name, method, path, body, content_type,
                                                           status, field):
    headers = {"content-type": content_type} if content_type else {}
    if isinstance(body, bytes):
        response = client.request(method, path, content=body, headers=headers)
    elif body is None:
        response = client.request(method, path)
    else:
        response = client.request(method, path, content=json.dumps(body), headers=headers or
                                  {"content-type": "application/json"})
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["status"] == status and answer["run"]["model_id"] == engine.run.model_id
    assert answer["errors"] and all(e["message"] for e in answer["errors"])
    if field is not None:
        assert field in [e["field"] for e in answer["errors"]], answer
        named = next(e for e in answer["errors"] if e["field"] == field)
        assert "Fix:" in named["message"], named
    if name == "unknown ids":
        assert answer["unknown_ids"] == ["x1", "x2", "999"] and "'x1', 'x2', '999'" in answer["errors"][0]["message"]
    # the server still answers
    assert client.post("/v1/recommend", json={"history": ["1"], "k": 1}).status_code == 200


def test_a_chunked_body_over_the_limit_gets_413(client):
    def chunks():
        yield b'{"history": ['
        for _ in range(2000):
            yield b'"1",'
        yield b'"1"]}'

    response = client.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["errors"][0]["field"] == "body"
    assert client.get("/healthz").json()["status"] == "alive"


def test_a_full_queue_gets_503_with_retry_after(engine):
    with client_of(engine, max_queue=3) as c:
        response = c.post("/v1/recommend:batch", json={"histories": [["1"], ["2"], ["3"], ["4"]]})
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1 and "retry" in response.json()["errors"][0]["message"]
        assert c.post("/v1/recommend:batch", json={"histories": [["1"], ["2"], ["3"]]}).status_code == 200
        assert 'bearrec_rejected_total 4.0' in c.get("/metrics").text


def test_past_the_deadline_gets_504_and_leaves_the_queue(engine):
    # the batch waits 5 s to fill, the request only 0.3 s: it is answered 504 and taken out of the queue
    with client_of(engine, max_wait_ms=5000, request_timeout_s=0.3, max_batch_size=4) as c:
        response = c.post("/v1/recommend", json={"history": ["1"]})
        assert response.status_code == 504 and "deadline" in response.json()["errors"][0]["message"]
        metrics = c.get("/metrics").text
        assert 'bearrec_dropped_total{reason="deadline"} 1.0' in metrics and "bearrec_queue_depth 0.0" in metrics
        assert "bearrec_batch_size_count 0.0" in metrics  # nothing was decoded


# ------------------------------------------------------------------------------------------- the other endpoints
def test_items_finds_titles_and_ids(client, engine):
    body = client.get("/v1/items", params={"query": "RED", "limit": 50}).json()
    assert body["total"] == len(body["items"]) > 0
    assert all("red" in i["title"] for i in body["items"])
    assert {i["item_id"] for i in body["items"]} == {k for k, t in engine.items.items() if "red" in t}
    two = client.get("/v1/items", params={"query": "blue lamp"}).json()["items"]
    assert two and all("blue" in i["title"] and "lamp" in i["title"] for i in two)
    by_id = client.get("/v1/items", params={"query": "7"}).json()["items"]
    assert by_id[0] == {"item_id": "7", "title": engine.items["7"]}
    everything = client.get("/v1/items", params={"limit": 5}).json()
    assert everything["total"] == len(engine.items) and len(everything["items"]) == 5
    assert client.get("/v1/items", params={"query": "no such words"}).json()["total"] == 0


def test_every_response_names_the_run(client, engine, small_run):
    for method, path in [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/"),
                         ("GET", "/v1/info"), ("GET", "/nowhere"), ("POST", "/v1/recommend")]:
        response = client.request(method, path)
        assert response.headers["x-bearrec-run"] == small_run.name, path
        assert response.headers["x-bearrec-model"] == engine.run.model_id, path
    assert client.get("/readyz").json()["status"] == "ready"
    info = client.get("/v1/info").json()
    assert info["max_k"] == BEAMS and info["searches"] == ["beam", "exact"] and info["items"] == len(engine.items)


def test_metrics_count_requests_batches_and_queue(engine):
    with client_of(engine) as c:
        c.post("/v1/recommend", json={"history": ["1"]})
        c.post("/v1/recommend:batch", json={"histories": [["1"], ["2"], ["3"]]})
        c.post("/v1/recommend", json={"history": ["nope"]})
        text = c.get("/metrics").text
    assert 'bearrec_requests_total{endpoint="/v1/recommend",status="200"} 1.0' in text
    assert 'bearrec_requests_total{endpoint="/v1/recommend",status="422"} 1.0' in text
    assert 'bearrec_requests_total{endpoint="/v1/recommend:batch",status="200"} 1.0' in text
    assert "bearrec_batch_size_count 2.0" in text and "bearrec_batch_size_sum 4.0" in text
    assert 'bearrec_request_seconds_count{endpoint="/v1/recommend"} 2.0' in text
    assert "bearrec_queue_depth 0.0" in text


def test_openapi_docs_and_page(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/recommend", "/v1/recommend:batch", "/v1/items", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert "history" in json.dumps(spec["components"]["schemas"])
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="query"' in page.text and "/v1/recommend" in page.text


# ------------------------------------------------------------------------------------------------ start-up
def call(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


def test_a_damaged_run_is_refused_at_start_up_with_the_recommend_message(small_run, tmp_path):
    run = copy_run(small_run, tmp_path)
    weights = run / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x5A
    weights.write_bytes(bytes(data))
    (tmp_path / "h.jsonl").write_text('{"history": ["1"]}\n')
    served, served_err = call("serve", str(run), "--port", "0", "--device", "cpu")
    recommended, recommend_err = call("recommend", str(run), "--histories", str(tmp_path / "h.jsonl"),
                                      "--output", str(tmp_path / "o.jsonl"), "--device", "cpu")
    assert served == recommended == 2
    assert served_err.strip() == recommend_err.strip() and "Fix" in served_err and "Traceback" not in served_err
    missing, text = call("serve", str(tmp_path / "no-run"), "--port", "0")
    assert missing == 2 and "no such run directory" in text


def test_a_busy_port_is_refused_with_a_fix(small_run):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        code, err = call("serve", str(small_run), "--port", str(taken.getsockname()[1]), "--device", "cpu")
    assert code == 2 and "cannot listen on 127.0.0.1" in err and "Fix:" in err


@pytest.mark.parametrize("device, named", [("cpu,cuda:7", "no usable CUDA GPU"), ("cpu,gpu0", "not a device name")])
def test_a_device_of_the_workers_list_that_is_not_there_is_refused_before_loading(small_run, device, named):
    code, err = call("serve", str(small_run), "--port", "0", "--device", device, "--workers", "2")
    assert code == 2 and named in err and "Fix:" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- the batcher
def run_batcher(scenario, **options):
    """Run `scenario(batcher, calls)` in an event loop; the fake decode records each batch and echoes payloads."""
    calls: list[tuple] = []

    def decode(key, payloads):
        calls.append((key, list(payloads)))
        return [ValueError("bad") if p == "bad" else f"done {p}" for p in payloads]

    async def main_():
        batcher = Batcher(decode, **{"max_batch_size": 3, "max_wait_s": 0.05, "max_queue": 10, **options})
        batcher.start()
        try:
            return await scenario(batcher, calls)
        finally:
            await batcher.stop()

    return asyncio.run(main_())


def test_batcher_groups_by_key_up_to_the_batch_size():
    async def scenario(b, calls):
        jobs = b.submit(["a", "b", "c", "d"], "x") + b.submit(["e"], "y") + b.submit(["f"], "x")
        results = await asyncio.gather(*(j.future for j in jobs))
        return results, calls

    results, calls = run_batcher(scenario)
    assert results == [f"done {p}" for p in "abcdef"]
    assert calls == [("x", ["a", "b", "c"]), ("x", ["d", "f"]), ("y", ["e"])]


def test_batcher_waits_at_most_max_wait_and_drops_jobs_not_started():
    async def scenario(b, calls):
        loop = asyncio.get_running_loop()
        start = loop.time()
        (first,) = b.submit(["a"], "x")
        (gone,) = b.submit(["b"], "x")
        assert b.drop(gone, "disconnected") and b.depth == 1
        assert await first.future == "done a"
        waited = loop.time() - start
        assert not b.drop(first, "deadline")  # finished: nothing to drop
        return waited, calls

    waited, calls = run_batcher(scenario, max_wait_s=0.2)
    assert 0.15 <= waited < 2 and calls == [("x", ["a"])]


def test_batcher_refuses_past_max_queue_and_fails_only_the_bad_job():
    async def scenario(b, calls):
        with pytest.raises(QueueFull) as full:
            b.submit(list("abcd"), "x")
        assert full.value.retry_after >= 1 and b.depth == 0
        jobs = b.submit(["ok", "bad"], "x")
        done = await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)
        return done

    ok, bad = run_batcher(scenario, max_queue=3)
    assert ok == "done ok" and isinstance(bad, ValueError)
