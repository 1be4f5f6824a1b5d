#!/usr/bin/env bash
# Tune the digits example on a real NVIDIA GPU (population-based) and print proof, from
# nvidia-smi, that the trials ran on it.
#
#   examples/image_classification/gpu_check.sh [GPU_ID] [OUTPUT_DIR]
#
# GPU_ID defaults to 0, OUTPUT_DIR to a new temporary directory. PYTHON picks the interpreter
# (default python3); it needs autofinetune and a CUDA build of torch. POPSIZE and ROUNDS set the
# budget (default 4 x 3). Exit status: 0 proof found, 1 search failed or no proof, 2 no GPU.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
GPU=${1:-0}
OUT=${2:-$(mktemp -d "${TMPDIR:-/tmp}/autofinetune-gpu-check.XXXXXX")}
PY=${PYTHON:-python3}
POPSIZE=${POPSIZE:-4}
ROUNDS=${ROUNDS:-3}

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check: nvidia-smi not found: no NVIDIA GPU (or driver) on this machine; nothing to check." >&2
    exit 2
fi
if ! nvidia-smi -i "$GPU" -L >/dev/null 2>&1; then
    echo "gpu_check: nvidia-smi knows no GPU $GPU here:" >&2
    nvidia-smi -L >&2
    exit 2
fi
# Trials see only their GPU (CUDA_VISIBLE_DEVICES=$GPU), so check device 0 the same way.
if ! CUDA_VISIBLE_DEVICES=$GPU "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: $PY's torch cannot use GPU $GPU (a CPU-only build?); install a CUDA build:" \
         "https://pytorch.org/get-started/locally/" >&2
    exit 2
fi

mkdir -p "$OUT"
echo "gpu_check: $(nvidia-smi -i "$GPU" -L); results in $OUT"

# Sample, in the background, which processes hold the GPU and how busy it is. Trials of this
# tiny model live a few seconds, hence the 250 ms period.
nvidia-smi -i "$GPU" --query-compute-apps=pid,process_name,used_memory --format=csv,noheader \
    -lms 250 > "$OUT/nvidia-smi-apps.csv" 2>&1 &
APPS_PID=$!
nvidia-smi -i "$GPU" --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader \
    -lms 250 > "$OUT/nvidia-smi-gpu.csv" 2>&1 &
GPU_PID=$!
stop_samplers() { kill "$APPS_PID" "$GPU_PID" 2>/dev/null; wait "$APPS_PID" "$GPU_PID" 2>/dev/null; }
trap stop_samplers EXIT

"$PY" -m autofinetune "$HERE/train.py" --param_file="$HERE/hparam.yaml" --gpu="$GPU" \
    --evaluator=populationbased --popsize="$POPSIZE" --round="$ROUNDS" \
    --output_dir="$OUT/search" > "$OUT/search.log" 2>&1 &
TUNER_PID=$!
# While the search runs, keep one full nvidia-smi table taken while a trial held the GPU.
while kill -0 "$TUNER_PID" 2>/dev/null; do
    if [ ! -s "$OUT/nvidia-smi-during-trial.txt" ]; then
        apps=$(nvidia-smi -i "$GPU" --query-compute-apps=pid --format=csv,noheader 2>/dev/null)
        [[ $apps =~ [0-9] ]] && nvidia-smi > "$OUT/nvidia-smi-during-trial.txt" 2>&1
    fi
    sleep 0.5
done
wait "$TUNER_PID"
STATUS=$?
stop_samplers
trap - EXIT

echo "== the search (exit status $STATUS) =="
tail -n 12 "$OUT/search.log"
echo "== nvidia-smi while a trial ran =="
cat "$OUT/nvidia-smi-during-trial.txt" 2>/dev/null || echo "(no trial was seen on the GPU)"

# Proof: trials that trained on cuda (their own log says so), and the PIDs that reported a
# score (round*/result-*.json) against the PIDs nvidia-smi saw on the GPU. In a container
# nvidia-smi may show host PIDs; then the process list and the trial logs are the proof.
"$PY" - "$OUT" <<'EOF'
import csv, glob, json, os, sys
out = sys.argv[1]
logs = sorted(glob.glob(os.path.join(out, "search", "round*", "log-*.info")))
on_cuda = [p for p in logs if any(l.startswith("device: cuda") for l in open(p, errors="replace"))]
print(f"== proof ==\ntrials whose log says 'device: cuda': {len(on_cuda)} of {len(logs)}")
if on_cuda:
    print("  e.g.", next(l.strip() for l in open(on_cuda[0]) if l.startswith("device:")))
seen = {}
for row in csv.reader(open(os.path.join(out, "nvidia-smi-apps.csv"), errors="replace")):
    if len(row) >= 3 and row[0].strip().isdigit():
        seen.setdefault(int(row[0]), (row[1].strip(), row[2].strip()))
print(f"processes nvidia-smi saw on the GPU during the search: {len(seen)}")
for pid, (name, mem) in sorted(seen.items())[:10]:
    print(f"  pid {pid} {name} {mem}")
trial_pids = set()
for path in glob.glob(os.path.join(out, "search", "round*", "result-*.json")):
    try:
        trial_pids.add(int(json.load(open(path))["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
print(f"trial PIDs (from their reports) seen by nvidia-smi: {len(trial_pids & set(seen))} "
      f"of {len(trial_pids)}")
sys.exit(0 if on_cuda and seen else 1)
EOF
PROOF=$?
[ "$STATUS" -eq 0 ] && [ "$PROOF" -eq 0 ] && echo "gpu_check: OK, the trials ran on GPU $GPU" && exit 0
echo "gpu_check: FAILED (search exit $STATUS, proof exit $PROOF); see $OUT" >&2
exit 1
