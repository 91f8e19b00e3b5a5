#!/usr/bin/env bash
# bench/gpu_check.sh OUT_DIR [options]: bearrec's GPU check, bench/gpu_check.py (its docstring, or --help, says what it
# does and takes), run by $PYTHON or python3.
exec "${PYTHON:-python3}" "$(dirname "${BASH_SOURCE[0]}")/gpu_check.py" "$@"
