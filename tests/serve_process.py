"""A `bearrec serve` process for the serve tests and bench/bench_serve.py: started on loopback, found by its
start-up line, stopped."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

LISTENING = re.compile(r"listening on (http://[\d.]+:\d+)")


class ServerProcess:
    """`python -m bearrec serve RUN_DIR --host 127.0.0.1 --port 0 ARGS`, its URL once it answers, its output kept."""

    def __init__(self, run_dir: str | Path, args: Sequence[str] = (), *, env: dict[str, str] | None = None,
                 timeout: float = 120.0):
        command = [sys.executable, "-m", "bearrec", "serve", str(run_dir), "--host", "127.0.0.1", "--port", "0",
                   "--log-level", "warning", *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self.url: str | None = None
        found = threading.Event()

        def read() -> None:  # keeps reading, so that a chatty server never blocks on a full pipe
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                match = LISTENING.search(line)
                if match and self.url is None:
                    self.url = match[1]
                    found.set()
            found.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not found.wait(timeout) or self.url is None:
            self.kill()
            raise RuntimeError(f"bearrec serve did not start:\n{self.output}")
        self._wait_ready(timeout)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"bearrec serve never became ready:\n{self.output}")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then its exit status (killed after `timeout` seconds)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.wait()
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()
