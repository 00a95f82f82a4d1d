#!/usr/bin/env bash
# Train the small generator on a lent GPU machine (no internet, no Debian TTS), in stages
# that each fit in one 10-minute device command. State lives in git-ignored folders of the
# repository (data/gpu, runs/gpu), which a warm machine keeps between commands; every
# stage copies what it produced to $OUT (at most 8 files).
#
#   bash scripts/gpu_train.sh data    # synthesise HOURS of conversations (resumes if cut off)
#   bash scripts/gpu_train.sh train   # train for MINUTES (+ ~1 min loading), resuming;
#                                     # repeat until it reports "finished" (plateau or max steps)
#   bash scripts/gpu_train.sh eval    # score the exported EMA weights on the test split
#   bash scripts/gpu_train.sh all     # the three in a row (only if they fit one command)
#
# Settings (environment): HOURS=20 WORKERS=16 MINUTES=7 PRESET=small BATCH=64 MAX_STEPS=20000
# VAL_EVERY=250 NPROC=1 (GPUs, torchrun) EVAL_HOURS=0.25 EVAL_DEVICE=cuda ENGINES=(flite,espeak if espeak is
# importable, else flite, which leaves val without a voice: add --split-hours to EXTRA_SYNTH_ARGS;
# Festival's val voice ked is not carried, so val is espeak-ng's f4 alone) EXTRA_TRAIN_ARGS (more `train generator` flags), DATA (dataset
# folder, default data/gpu) and EXTRA_SYNTH_ARGS (more `data synth` flags, e.g. --train-timbre).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
stage="${1:-all}"
: "${OUT:?set OUT to the folder whose files come back}"
HOURS="${HOURS:-20}" WORKERS="${WORKERS:-16}" MINUTES="${MINUTES:-7}" PRESET="${PRESET:-small}"
BATCH="${BATCH:-64}" MAX_STEPS="${MAX_STEPS:-20000}" VAL_EVERY="${VAL_EVERY:-250}" NPROC="${NPROC:-1}"
EVAL_HOURS="${EVAL_HOURS:-0.25}"
data="${DATA:-$repo/data/gpu}"
run="$repo/runs/gpu"
weights="$run/generator-$PRESET.safetensors"
mkdir -p "$OUT" "$run"

# -- environment: flite from carried .debs, carried wheels, the repo on the path -------------
if [ -x "$repo/.carry/flite/usr/bin/flite" ]; then          # an unpacked .deb folder
    export DYSTREAM_FLITE="$repo/.carry/flite/usr/bin/flite"
    export DYSTREAM_FLITE_LIB="$repo/.carry/flite/usr/lib/x86_64-linux-gnu"
    export LD_LIBRARY_PATH="$DYSTREAM_FLITE_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
    python3 -m pip install -q --no-index --find-links "$repo/.carry/wheels" soundfile soxr av 2>&1 \
        | grep -v "^WARNING" || true
else                                                         # .carry/debs/*.deb
    set +u; source "$repo/scripts/device_setup.sh"; set -u
    if compgen -G "$repo/.carry/wheels/av-*.whl" >/dev/null; then   # PyAV, only where a wheel was carried
        python3 -m pip install -q --no-index --find-links "$repo/.carry/wheels" av 2>&1 | grep -v "^WARNING" || true
    fi
fi
if [ -z "${ENGINES:-}" ]; then
    if python3 -c "import espeakng_loader" 2>/dev/null; then ENGINES=flite,espeak; else ENGINES=flite; fi
fi
python3 - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}" if torch.cuda.is_available() else ""))
EOF

stage_data() {
    echo "== data: $HOURS h, $WORKERS workers, engines $ENGINES -> $data"
    local start=$SECONDS status=0
    # Stop short of the 10-minute command limit; a re-run resumes the finished shards.
    timeout 540 python3 -m dystream data synth --hours "$HOURS" --workers "$WORKERS" --engines "$ENGINES" \
        --quiet -o "$data" ${EXTRA_SYNTH_ARGS:-} 2>&1 | tee "$OUT/data_synth.log" || status=$?
    echo "data synth: exit $status after $((SECONDS - start)) s wall" | tee -a "$OUT/data_synth.log"
    du -sh "$data" | tee -a "$OUT/data_synth.log"
    [ "$status" = 0 ] || { echo "not finished: run the data stage again to resume"; return 1; }
}

stage_train() {
    if [ -f "$run/training_record.json" ] && grep -Eq '"stopped_because": "(plateau|max-steps)"' "$run/training_record.json"; then
        echo "== train: already finished ($(grep stopped_because "$run/training_record.json"))"
    else
        local resume=() launcher=(python3 -m dystream) status=0
        [ -f "$run/checkpoint.pt" ] && resume=(--resume)
        { [ "$NPROC" -gt 1 ] || [ "${TORCHRUN:-0}" = 1 ]; } && launcher=(torchrun --standalone "--nproc_per_node=$NPROC" -m dystream)
        echo "== train: preset $PRESET, batch $BATCH, $MINUTES min this command ${resume[*]:-}"
        "${launcher[@]}" train generator --data "$data" -o "$run" --preset "$PRESET" \
            --batch-size "$BATCH" --max-steps "$MAX_STEPS" --max-minutes "$MINUTES" --until-plateau \
            --val-every "$VAL_EVERY" --ckpt-every 500 --log-every 50 --export "$weights" --no-progress \
            ${EXTRA_TRAIN_ARGS:-} "${resume[@]}" 2>&1 | tee -a "$run/train_output.log" || status=$?
        [ "$status" = 0 ] || { echo "training failed (exit $status)"; cp "$run/train_output.log" "$OUT/"; return "$status"; }
    fi
    for f in "$weights" "$run/loss_curve.png" "$run/log.jsonl" "$run/training_record.json" "$run/train_output.log"; do
        cp "$f" "$OUT/"
    done
    python3 - "$run/training_record.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
val = "none yet" if r["final_val_loss"] is None else f"{r['final_val_loss']:.4f}"
print(f"step {r['steps']} ({r['stopped_because']}), {r['train_wall_seconds'] / 60:.1f} min training, "
      f"val loss {val}; finished: {r['stopped_because'] in ('plateau', 'max-steps')}")
EOF
}

stage_eval() {
    echo "== eval: $weights on the test split (first $EVAL_HOURS h, seeds 0 1 2)"
    # Frame-by-frame sampling of whole conversations: keep the hours small enough to fit one command.
    timeout 560 python3 -m dystream evaluate --data "$data" --split test --checkpoint "$weights" --seeds 0 1 2 \
        --max-hours "$EVAL_HOURS" --device "${EVAL_DEVICE:-cuda}" -o "$OUT/eval.json" 2>&1 | tee "$OUT/eval.txt"
}

case "$stage" in
    data) stage_data ;;
    train) stage_train ;;
    eval) stage_eval ;;
    all) stage_data && stage_train && stage_eval ;;
    *) echo "usage: OUT=DIR bash scripts/gpu_train.sh data|train|eval|all" >&2; exit 2 ;;
esac
