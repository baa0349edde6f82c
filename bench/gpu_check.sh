#!/usr/bin/env bash
# What only a GPU can show, through the code paths a run takes, in one script under 8 minutes on one
# H100/H200 (issue 13 item 5): the ASR stage through its worker on decoded files with language ID on
# (bench/asr.py: clips/s, RTFx, GPU utilisation), pretraining through the real loader over 100
# VoxCeleb2-shaped shards with the LM cache (samples/s, GPU utilisation, loader vs batches in memory),
# training steps at MiniLM / BERT-base / BERT-large shapes in bf16 and fp32 (the paper recipe),
# torch.compile on the fixed text lengths, and DDP on every GPU present. Checks: bench/gpu_check.py.
#
#   bash bench/gpu_check.sh              # on the GPU machine, from anywhere in the repository
#   bash bench/gpu_check.sh --dry-run    # the same code paths at tiny size on the CPU (the tests run this)
#   TOKENIZER=DIR bash bench/gpu_check.sh   # where the bundled MiniLM package is not installed: LMs of
#                                           # its shapes with random weights and DIR's tokenizer files
#
# Prints one JSON line per check on stdout (progress and tracebacks go to stderr); a real run also
# writes them to bench/results/gpu_check.json (bench/voxceleb2.py reads it). A check that cannot run
# prints {"check": ..., "ok": false, "skipped" or "error": why}; each has a time limit, and one that
# hits it prints so. PYTHON picks the interpreter (default: python).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
DRY=()
ASR=(--device cuda --clips 256)
if [[ "${1:-}" == "--dry-run" ]]; then DRY=(--dry-run) && ASR=(--dry-run); fi
TOK=()
if [[ -n "${TOKENIZER:-}" ]]; then TOK=(--tokenizer "$TOKENIZER"); fi
GPUS=1
if [[ ${#DRY[@]} -eq 0 ]] && command -v nvidia-smi >/dev/null; then GPUS=$(nvidia-smi -L | grep -c '^GPU'); fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
RESULTS=/dev/null
if [[ ${#DRY[@]} -eq 0 ]]; then mkdir -p bench/results && RESULTS=bench/results/gpu_check.json && : >"$RESULTS"; fi

# check NAME LIMIT_S COMMAND...: run one check and keep the last JSON line it printed; if it printed
# none (crashed, killed, timed out), print a JSON line saying why.
check() {
    local name=$1 limit=$2 out rc why
    shift 2
    out=$(timeout --kill-after=10 "$limit" "$@" 2> >(tee "$WORK/$name.err" >&2))
    rc=$?
    out=$(printf '%s\n' "$out" | grep '^{' | tail -n 1)
    if [[ -n "$out" ]]; then  # named by its check, as every line of the results is
        "$PY" -c 'import json, sys; print(json.dumps({"check": sys.argv[1], **json.loads(sys.argv[2])}))' \
            "$name${DRY[*]:+_dry_run}" "$out" | tee -a "$RESULTS"
    else
        if [[ $rc -eq 124 || $rc -eq 137 ]]; then why="timed out after ${limit} s"; else why="exit $rc: $(tail -c 400 "$WORK/$name.err")"; fi
        "$PY" -c 'import json, sys; print(json.dumps({"check": sys.argv[1], "ok": False, "error": sys.argv[2]}))' \
            "$name" "$why" | tee -a "$RESULTS"
    fi
}

# Limits add up to 9 minutes; on an H200 the training checks took 3.5 of them (model loads included).
check asr 120 "$PY" bench/asr.py "${ASR[@]}"
check loader 90 "$PY" bench/gpu_check.py loader --work "$WORK" "${DRY[@]}" "${TOK[@]}"
check steps 110 "$PY" bench/gpu_check.py steps --work "$WORK" "${DRY[@]}" "${TOK[@]}"
check compile 150 "$PY" bench/gpu_check.py compile --work "$WORK" "${DRY[@]}" "${TOK[@]}"
check ddp 60 "$PY" -m torch.distributed.run --standalone --nproc_per_node="$GPUS" bench/gpu_check.py ddp \
    --work "$WORK" "${DRY[@]}" "${TOK[@]}"
