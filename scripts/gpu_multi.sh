#!/usr/bin/env bash
# Multi-GPU training checks on a lent machine with 2 GPUs (nvidia-h200-x2), one stage per
# 10-minute device command. Each stage synthesises its own data (a machine goes back when
# idle) and copies one archive of logs and records to $OUT.
#
#   OUT=... bash scripts/gpu_multi.sh compare   # 2 GPUs (NCCL) vs 1 GPU at the same global batch
#   OUT=... bash scripts/gpu_multi.sh scaling   # samples/s on 1 and 2 GPUs, small and large presets
#
# compare: one run on both GPUs under torchrun (seed 0), then at the same time: 1-GPU runs
#   with seeds 0 and 1 (the seed-to-seed spread), the 2-GPU checkpoint resumed on 1 GPU, and
#   the same checkpoint resumed on 4 processes (gloo on CPU: the machine has 2 GPUs and NCCL
#   takes one GPU per process). Every torch.save is audited (rank, path) for the 2-GPU run.
# scaling: short runs (validation only at the end) of each preset on 1 GPU and on 2 GPUs,
#   at the same global batch and at the same per-GPU batch.
#
# Settings (environment): HOURS=8 WORKERS=30 STEPS=1500 RESUME_STEPS=200 BATCH=64
# SCALE_STEPS=400 PER_GPU=64.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
stage="${1:?usage: OUT=DIR bash scripts/gpu_multi.sh compare|scaling}"
: "${OUT:?set OUT to the folder whose files come back}"
HOURS="${HOURS:-8}" WORKERS="${WORKERS:-30}" STEPS="${STEPS:-1500}" RESUME_STEPS="${RESUME_STEPS:-200}"
BATCH="${BATCH:-64}" SCALE_STEPS="${SCALE_STEPS:-400}" PER_GPU="${PER_GPU:-64}"
# NVLink multicast stays off: using it can take the host's shared GPUs out of service.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
data="$repo/data/multi"
runs="$repo/runs/multi"
mkdir -p "$OUT" "$runs"

set +u; source "$repo/scripts/device_setup.sh"; set -u
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$runs/gpus.txt"
nvidia-smi topo -m >> "$runs/gpus.txt" 2>&1 || true
python3 -c "import torch; print('torch', torch.__version__, 'GPUs', torch.cuda.device_count())" | tee -a "$runs/gpus.txt"

echo "== data: $HOURS h ($WORKERS workers) -> $data"
start=$SECONDS
python3 -m dystream data synth --hours "$HOURS" --workers "$WORKERS" --split-hours train=0.9,val=0.1,test=0 \
    --long-test-conversations 0 --quiet -o "$data" 2>&1 | tail -n 2
echo "data: $((SECONDS - start)) s"

# Common flags: constant lr after a short warm-up, so that a resumed run may go past --max-steps.
common=(--data "$data" --preset small --lr-schedule constant --warmup-steps 200 --val-every 250
        --val-batches 8 --log-every 10 --ckpt-every 500 --no-progress)
one_gpu() { python3 -m dystream train generator "$@"; }
two_gpus() { torchrun --standalone --nproc_per_node=2 -m dystream train generator "$@"; }

pack() {
    tar -czf "$OUT/multi_$stage.tar.gz" --exclude="*.pt" --exclude="*.safetensors" -C "$runs" .
    ls -la "$OUT"
}
trap pack EXIT

case "$stage" in
compare)
    # Audit of checkpoint writes: a sitecustomize that records (rank, file) for every torch.save.
    audit="$runs/audit"; mkdir -p "$audit"
    cat > "$audit/sitecustomize.py" <<'EOF'
import os
if os.environ.get("SAVE_AUDIT"):
    import torch
    _save = torch.save
    def _audited(obj, f, *args, **kwargs):
        with open(os.environ["SAVE_AUDIT"], "a") as log:
            log.write(f"rank {os.environ.get('RANK', '0')} pid {os.getpid()} {getattr(f, 'name', f)}\n")
        return _save(obj, f, *args, **kwargs)
    torch.save = _audited
EOF
    echo "== 2 GPUs, global batch $BATCH (seed 0), $STEPS steps"
    start=$SECONDS
    PYTHONPATH="$audit:$PYTHONPATH" SAVE_AUDIT="$runs/saves_2gpu.txt" timeout 240 \
        torchrun --standalone --nproc_per_node=2 -m dystream train generator "${common[@]}" \
        -o "$runs/gpu2_seed0" --batch-size "$BATCH" --seed 0 --max-steps "$STEPS" > "$runs/gpu2_seed0.log" 2>&1
    echo "exit $? after $((SECONDS - start)) s"; tail -n 2 "$runs/gpu2_seed0.log"
    ls -la "$runs/gpu2_seed0" > "$runs/gpu2_seed0_files.txt"; cat "$runs/saves_2gpu.txt"

    echo "== side by side: 1 GPU seeds 0 and 1; resume 2->1 GPU; resume 2->4 processes (gloo, CPU)"
    cp -r "$runs/gpu2_seed0" "$runs/resume_2to1"; cp -r "$runs/gpu2_seed0" "$runs/resume_2to4"
    rm -f "$runs"/resume_2to*/*.safetensors
    start=$SECONDS
    CUDA_VISIBLE_DEVICES=0 timeout 230 python3 -m dystream train generator "${common[@]}" -o "$runs/gpu1_seed0" \
        --batch-size "$BATCH" --seed 0 --max-steps "$STEPS" > "$runs/gpu1_seed0.log" 2>&1 & p1=$!
    CUDA_VISIBLE_DEVICES=1 timeout 230 python3 -m dystream train generator "${common[@]}" -o "$runs/gpu1_seed1" \
        --batch-size "$BATCH" --seed 1 --max-steps "$STEPS" > "$runs/gpu1_seed1.log" 2>&1 & p2=$!
    CUDA_VISIBLE_DEVICES=0 timeout 230 python3 -m dystream train generator "${common[@]}" -o "$runs/resume_2to1" \
        --batch-size "$BATCH" --seed 0 --max-steps $((STEPS + RESUME_STEPS)) --resume > "$runs/resume_2to1.log" 2>&1 & p3=$!
    OMP_NUM_THREADS=6 timeout 230 torchrun --standalone --nproc_per_node=4 -m dystream train generator "${common[@]}" \
        -o "$runs/resume_2to4" --device cpu --batch-size "$BATCH" --seed 0 --max-steps $((STEPS + 20)) \
        --log-every 5 --val-batches 1 --resume > "$runs/resume_2to4.log" 2>&1 & p4=$!
    for name in gpu1_seed0:$p1 gpu1_seed1:$p2 resume_2to1:$p3 resume_2to4:$p4; do
        wait "${name#*:}"; echo "${name%%:*}: exit $? after $((SECONDS - start)) s"; tail -n 1 "$runs/${name%%:*}.log"
    done
    ;;
scaling)
    # presets x (GPUs, global batch): strong scaling (same global batch) and weak (same per GPU).
    for preset in small large; do
        for spec in 1:$PER_GPU 2:$PER_GPU 2:$((2 * PER_GPU)); do
            n=${spec%%:*} batch=${spec#*:} name="scale_${preset}_${n}gpu_b${batch}"
            echo "== $name"
            start=$SECONDS
            launcher=(python3 -m dystream); [ "$n" -gt 1 ] && launcher=(torchrun --standalone "--nproc_per_node=$n" -m dystream)
            timeout 170 "${launcher[@]}" train generator "${common[@]}" --preset "$preset" -o "$runs/$name" \
                --batch-size "$batch" --max-steps "$SCALE_STEPS" --val-every 100000 --val-batches 1 --log-every 25 \
                > "$runs/$name.log" 2>&1
            echo "exit $? after $((SECONDS - start)) s"
            python3 - "$runs/$name/log.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rates = [r["samples_per_s"] for r in rows if r["kind"] == "train" and r["step"] > 100]
print(f"samples/s after step 100: median {statistics.median(rates):.0f} over {len(rates)} intervals")
EOF
            rm -f "$runs/$name/checkpoint.pt"
        done
    done
    ;;
*) echo "usage: OUT=DIR bash scripts/gpu_multi.sh compare|scaling" >&2; exit 2 ;;
esac
