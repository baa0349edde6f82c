#!/usr/bin/env bash
# What only a GPU can show, in one script under 8 minutes on one H100/H200 (issue 7 item 6):
# batched float16 faster-whisper ASR (RTFx), bf16 pretraining and fine-tuning steps (samples/s, MFU;
# bert-base-uncased if cached locally, else the bundled MiniLM), the training loop's length buckets
# and LM cache, `torchrun --nproc_per_node=1` DDP, and torch.compile. Checks: bench/gpu_check.py.
#
#   bash bench/gpu_check.sh              # on the GPU machine, from anywhere in the repository
#   bash bench/gpu_check.sh --dry-run    # the same code paths at tiny size on the CPU (the tests run this)
#
# Prints one JSON line per check on stdout (progress and tracebacks go to stderr). A check that
# cannot run prints {"check": ..., "ok": false, "skipped" or "error": why}; each has a time limit,
# and one that hits it prints so. PYTHON picks the interpreter (default: python).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
DRY=()
if [[ "${1:-}" == "--dry-run" ]]; then DRY=(--dry-run); fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# check NAME LIMIT_S COMMAND...: run one check; if it printed nothing (crashed, killed, timed out),
# print a JSON line saying why.
check() {
    local name=$1 limit=$2 out rc why
    shift 2
    out=$(timeout --kill-after=10 "$limit" "$@" 2> >(tee "$WORK/$name.err" >&2))
    rc=$?
    if [[ -n "$out" ]]; then
        echo "$out"
    else
        if [[ $rc -eq 124 || $rc -eq 137 ]]; then why="timed out after ${limit} s"; else why="exit $rc: $(tail -c 400 "$WORK/$name.err")"; fi
        "$PY" -c 'import json, sys; print(json.dumps({"check": sys.argv[1], "ok": False, "error": sys.argv[2]}))' "$name" "$why"
    fi
}

# Limits add up to 7.5 minutes; on an H200 the checks take far less (model loads included).
check asr 100 "$PY" bench/gpu_check.py asr --work "$WORK" "${DRY[@]}"
check train 170 "$PY" bench/gpu_check.py train --work "$WORK" "${DRY[@]}"
check ddp 60 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 bench/gpu_check.py ddp --work "$WORK" "${DRY[@]}"
check compile 120 "$PY" bench/gpu_check.py compile --work "$WORK" "${DRY[@]}"
