"""The `bearrec serve` subcommand: its options, the start-up checks, and one process or several under uvicorn.

The run is loaded (and so checked, as `bearrec recommend --histories` checks it) before the port is opened: a run
that fails its checks is refused with the same message and exit status 2, and nothing listens. SIGTERM (or Ctrl+C)
stops taking connections, answers the requests in flight, and exits 0.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import tempfile

from ..cli_args import non_negative_int, positive_int
from ..errors import ConfigError
from ..machine import check_device
from .config import ENV, ServeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `bearrec serve` (parsing them needs none of the serve extra's packages)."""
    d = ServeConfig(run_dir="")
    p.add_argument("run_dir", help="a `bearrec train` output directory")
    p.add_argument("--host", default=d.host, help=f"address to listen on (default {d.host}; 0.0.0.0 for every "
                   "interface, e.g. behind a load balancer)")
    p.add_argument("--port", type=non_negative_int, default=d.port, help=f"port (default {d.port}; 0: any free port, "
                   "printed at start-up)")
    p.add_argument("--num-beams", "--beams", type=positive_int, default=d.num_beams,
                   help=f"beams of every beam search, and the largest k a request may ask for (default {d.num_beams})")
    p.add_argument("--search", choices=["beam", "exact"], default=d.search,
                   help="a request's search when it names none (default beam); requests may ask for either")
    p.add_argument("--max-batch-size", type=positive_int, default=d.max_batch_size,
                   help=f"histories decoded in one search (default {d.max_batch_size}; 1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help=f"how long a request may wait for its batch to fill (default {d.max_wait_ms:g})")
    p.add_argument("--max-queue", type=positive_int, default=d.max_queue,
                   help=f"histories waiting at most; more are answered 503 with Retry-After (default {d.max_queue})")
    p.add_argument("--request-timeout", type=float, default=d.request_timeout_s,
                   help=f"seconds before a request is answered 504 (default {d.request_timeout_s:g})")
    p.add_argument("--max-expansions", type=positive_int, default=d.max_expansions,
                   help=f"exact search: model evaluations per history before it stops uncertified "
                        f"(default {d.max_expansions})")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the GPU when there is one); a comma list "
                   "spreads --workers over devices, e.g. cuda:0,cuda:1")
    p.add_argument("--workers", type=positive_int, default=d.workers,
                   help="processes on this machine, each with its own copy of the model (default 1)")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], default="info")
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")


def run(args: argparse.Namespace) -> int:
    """`bearrec serve`: check the run, open the port, serve until SIGTERM or Ctrl+C."""
    config = ServeConfig(run_dir=args.run_dir, host=args.host, port=args.port, num_beams=args.num_beams,
                         search=args.search, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                         max_queue=args.max_queue, request_timeout_s=args.request_timeout,
                         max_expansions=args.max_expansions, device=args.device, workers=args.workers)
    uvicorn = _need_extra()
    _check_devices(config)
    from .engine import Engine  # torch and transformers: only once the options are parsed (`--help` stays light)

    engine = Engine.load(config, device=config.devices()[0])  # every check of the run, before anything listens
    sock = _listen(config.host, config.port)
    host, port = sock.getsockname()[:2]
    print(f"bearrec serve: run {engine.run.name} (model {engine.run.model_id}) on {engine.device}, "
          f"listening on http://{host}:{port} (page at /, API docs at /docs)", flush=True)
    common = dict(log_level=args.log_level, access_log=args.access_log, timeout_graceful_shutdown=None)
    if config.workers == 1:
        from .app import create_app  # FastAPI, an optional extra: only once _need_extra found it

        server = uvicorn.Server(uvicorn.Config(create_app(config, engine), **common))
        # uvicorn re-raises the signal it stopped on once it has shut down; ignoring it then makes the exit 0
        signal.signal(signal.SIGTERM, lambda *_: None)
        server.run(sockets=[sock])
        return 0 if server.started else 1
    del engine
    return _run_workers(uvicorn, config, sock, common)


def _run_workers(uvicorn, config: ServeConfig, sock: socket.socket, common: dict) -> int:  # type: ignore[no-untyped-def]
    """N uvicorn workers on the port `sock` proved free; metrics summed over them (prometheus-client's
    multiprocess mode). uvicorn opens the port again itself, in the parent, and shares it with the workers."""
    from .workers import SLOTS_ENV  # torch: the workers' module loads it, and only N workers need it

    host, port = sock.getsockname()[:2]
    sock.close()
    scratch = tempfile.mkdtemp(prefix="bearrec-serve-")
    os.makedirs(os.path.join(scratch, "metrics"))
    os.environ.update({ENV: config.to_env(), SLOTS_ENV: scratch,
                       "PROMETHEUS_MULTIPROC_DIR": os.path.join(scratch, "metrics")})
    try:
        uvicorn.run("bearrec.serve.workers:app_from_env", factory=True, host=host, port=port,
                    workers=config.workers, **common)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _need_extra():  # type: ignore[no-untyped-def]
    """uvicorn, once FastAPI and prometheus-client are importable too; else how to install them."""
    try:
        import fastapi  # noqa: F401 - the extra's packages, present or not
        import prometheus_client  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise ConfigError(f"`bearrec serve` needs the serve extra ({e.name} is missing). "
                          "Fix: pip install 'bearrec[serve]'.") from None
    return uvicorn


def _check_devices(config: ServeConfig) -> None:
    """Every device of `--device` (a comma list for the workers) checked before the run is loaded."""
    for device in config.devices():
        if device is not None:
            check_device(device)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (as uvicorn would open it), or a ConfigError saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}. Fix: pass another --port (or --port 0 "
                          "for any free one), or stop what uses it.") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
