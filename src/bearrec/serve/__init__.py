"""`bearrec serve RUN_DIR`: a trained run behind HTTP, its requests batched into one constrained beam search.

Installed with `pip install 'bearrec[serve]'` (FastAPI, uvicorn, prometheus-client). The pieces:
`config.ServeConfig` (the options), `engine.Engine` (the loaded run: checks, decodes, looks titles up),
`batcher.Batcher` (groups concurrent requests), `app.create_app` (the HTTP API, the page, metrics) and
`command` (the subcommand: start-up checks, one process or several). Importing this package needs none of
the extra's packages; `bearrec.serve.app` does.
"""
from __future__ import annotations

from .config import ServeConfig

__all__ = ["ServeConfig"]
