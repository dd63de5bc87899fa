#!/usr/bin/env bash
# The GPU kit: every CUDA path of bench on a real GPU in one command, within 8 minutes (KIT_DEADLINE_S).
#   1. tests:   the device tests (`pytest -m device`, tests/run/test_device.py) on the device;
#   2. perf:    `bench perf --device DEVICE`, ours against learn2learn side by side;
#   3. timing:  bench's CUDA-event timer against a wall clock with the device synchronised;
#   4. runs:    ProtoNet and second-order MAML on Omniglot 5w1s at the paper configuration, as many
#               meta-iterations as fit (MAML's count from the rate step 2 measured; both recorded);
#   5. summary: summary.md and summary.json, and the records in records.tar.gz.
# Everything goes to $OUT (the device tool's folder that comes back), else results/gpu-check/TIME.
# A step that fails is reported and the next one still runs; the exit code is the first failure's.
# `--device cpu --budget tiny` runs the same steps in a minute or two (tests/test_gpu_kit.py).
#
# Usage: tools/gpu_check.sh [--device cuda|cpu] [--budget full|tiny]
# Environment: PYTHON (default python3), BENCH_DATA_DIR (holds omniglot/), KIT_TESTS (pytest
# selection for step 1, default `-m device`), KIT_MAML_SECONDS (default 60), KIT_DEADLINE_S (default 480).
# On a lent machine, with the wheels and data that tools/prepare_gpu_kit.sh made:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#   PYTHONPATH=/tmp/site BENCH_DATA_DIR=.gpu-data tools/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda budget=full
while [ $# -gt 0 ]; do
    case $1 in
        --device) device=$2; shift 2 ;;
        --budget) budget=$2; shift 2 ;;
        *) echo "usage: tools/gpu_check.sh [--device cuda|cpu] [--budget full|tiny]" >&2; exit 2 ;;
    esac
done
case $budget in full|tiny) ;; *) echo "--budget $budget: expected full or tiny" >&2; exit 2 ;; esac
python=${PYTHON:-python3}
out=${OUT:-results/gpu-check/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
records=$(mktemp -d)  # records sit 3 folders deep, deeper than $OUT brings back: they travel as one archive
log="$out/kit.log"
first_failure=0
export PYTHONUNBUFFERED=1

# The whole kit ends within KIT_DEADLINE_S (default 480, 8 minutes; the device tool stops a command at 600 s,
# and the summary and the archive must still be written): no step may run past it.
kit_started=$(date +%s)
deadline=${KIT_DEADLINE_S:-480}

# step NAME TIMEOUT_S COMMAND...: runs it with a time limit (its own, or what is left of the
# deadline if less), logs it, notes its exit code and seconds.
step() {
    local name=$1 limit=$2 started code left
    shift 2
    started=$(date +%s)
    left=$(( deadline - 15 - (started - kit_started) ))
    if [ "$left" -lt "$limit" ]; then limit=$left; fi
    if [ "$limit" -le 0 ]; then
        echo "$name 124 0" >> "$out/steps.txt"
        echo "=== $name: not run, the kit's deadline ($deadline s) is reached" | tee -a "$log"
        [ "$first_failure" -ne 0 ] || first_failure=124
        return
    fi
    echo "=== $name: $*" >> "$log"
    timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1
    code=$?
    echo "$name $code $(( $(date +%s) - started ))" >> "$out/steps.txt"
    echo "=== $name: exit $code in $(( $(date +%s) - started )) s" | tee -a "$log"
    [ "$first_failure" -ne 0 ] || first_failure=$code
}

"$python" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
  "cuda", torch.version.cuda, "device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")' \
    | tee -a "$log"
if [ "$budget" = full ]; then
    perf_args=() protonet=(--tier paper --set suite.meta_iterations=1500 --set suite.val_every=500)
    maml=(--tier paper) maml_seconds=${KIT_MAML_SECONDS:-60} maml_default=300 quick=() limits=(90 260 40 70 160)
else  # seconds, not minutes, on a CPU: chunks set rather than measured, a handful of episodes
    perf_args=(--quick --rounds 1 --no-memory)
    small=(--tier smoke --task-chunk 2 --eval-chunk 5 --set suite.val_tasks=4 --set suite.test_tasks=10)
    protonet=("${small[@]}" --set suite.meta_iterations=4 --set suite.val_every=2)
    maml=("${small[@]}") maml_seconds=${KIT_MAML_SECONDS:-0.5} maml_default=4 quick=(--quick) limits=(300 300 120 120 120)
fi

# shellcheck disable=SC2086  # KIT_TESTS is a list of pytest arguments
step tests "${limits[0]}" env BENCH_TEST_DEVICE="$device" "$python" -m pytest -q -p no:cacheprovider \
    --junitxml="$out/tests.xml" ${KIT_TESTS:--m device}
step perf "${limits[1]}" "$python" -m bench perf --device "$device" "${perf_args[@]}" --results-dir "$records"
step timing "${limits[2]}" "$python" tools/gpu_kit.py timing "$device" "$out/timing.json" "${quick[@]}"
step protonet "${limits[3]}" "$python" -m bench -q run omniglot-5w1s --algorithms protonet --seeds 0 \
    --device "$device" "${protonet[@]}" --results-dir "$records"
perf_record=$(ls "$records"/perf/perf-*.json 2>/dev/null | tail -n 1)
maml_iterations=$("$python" tools/gpu_kit.py iterations "${perf_record:-none}" "$maml_seconds" --default "$maml_default")
maml_val_every=$(( (maml_iterations + 2) / 3 ))  # three validations: the curve so far
step maml "${limits[4]}" "$python" -m bench -q run omniglot-5w1s --algorithms maml --seeds 0 --device "$device" \
    "${maml[@]}" --set suite.meta_iterations="$maml_iterations" --set suite.val_every="$maml_val_every" \
    --results-dir "$records"
"$python" tools/gpu_kit.py summary "$out" "$records" >> "$log" 2>&1 || { [ "$first_failure" -ne 0 ] || first_failure=1; }
tar -czf "$out/records.tar.gz" -C "$records" .
rm -rf "$records"
echo "gpu kit: summary in $out/summary.md, records in $out/records.tar.gz, exit $first_failure"
exit "$first_failure"
