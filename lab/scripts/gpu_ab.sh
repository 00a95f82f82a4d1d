#!/usr/bin/env bash
# A/B several training recipes side by side on one lent GPU, in one device command:
# synthesise the data once (scripts/gpu_train.sh data), then train every variant at the
# same time on the same GPU (the small preset is launch-bound, so a few runs share one
# GPU well), each for MINUTES, and copy each variant's EMA weights plus one archive of
# the logs to $OUT. Score the weights afterwards with `dystream evaluate --checkpoint`.
#
#   VARIANTS="base: ;rel:--model-option pose_relative=True" OUT=... bash scripts/gpu_ab.sh
#
# VARIANTS: "name:train-flags" pairs separated by ";" (at most 7: $OUT takes 8 files).
# Settings (environment): MINUTES=6 PRESET=small BATCH=64 SEED=0 HOURS=20 WORKERS=16, and
# RESUME=1 to continue every variant from its checkpoint on a machine that is still warm
# (data/gpu and runs/ab kept; MINUTES is the training time of THIS command: `--max-minutes`
# budgets one invocation; with ~60 s of start-up and loading, keep MINUTES <= 8 in a
# 10-minute device command),
# SKIP_DATA=1 to start fresh runs on data already made. A variant may train on other
# data with its own `--data DIR` flag (the last --data wins). A variant may start from
# trained weights with `--init-weights FILE` (carry FILE, e.g. under .carry/init/); with
# RESUME=1 that flag is dropped, so one VARIANTS string serves every command.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
: "${OUT:?set OUT to the folder whose files come back}"
: "${VARIANTS:?set VARIANTS to name:flags pairs separated by ;}"
MINUTES="${MINUTES:-6}" PRESET="${PRESET:-small}" BATCH="${BATCH:-64}" SEED="${SEED:-0}"
data="$repo/data/gpu"
runs="$repo/runs/ab"
mkdir -p "$OUT" "$runs"

resume=()
[ "${RESUME:-0}" = 1 ] && resume=(--resume)
if [ "${RESUME:-0}" != 1 ] && [ "${SKIP_DATA:-0}" != 1 ]; then
    bash "$repo/scripts/gpu_train.sh" data
fi
set +u; source "$repo/scripts/device_setup.sh"; set -u

pids=() names=()
IFS=';' read -ra pairs <<< "$VARIANTS"
for pair in "${pairs[@]}"; do
    name="${pair%%:*}"; name="${name// /}"
    flags="${pair#*:}"
    if [ "${RESUME:-0}" = 1 ]; then   # the checkpoint holds the weights now
        flags="$(sed -E 's/--init-weights[ =][^ ]+//g' <<< "$flags")"
    fi
    [ -n "$name" ] || continue
    mkdir -p "$runs/$name"
    echo "== variant $name: $flags"
    # shellcheck disable=SC2086
    python3 -m dystream train generator --data "$data" -o "$runs/$name" --preset "$PRESET" \
        --batch-size "$BATCH" --max-minutes "$MINUTES" --seed "$SEED" --val-every 250 --log-every 50 \
        --lr-schedule constant --warmup-steps 500 --no-progress \
        --export "$runs/$name/generator-$name.safetensors" $flags "${resume[@]}" >> "$runs/$name/train_output.log" 2>&1 &
    pids+=($!) names+=("$name")
done
status=0
for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
        cp "$runs/${names[$i]}/generator-${names[$i]}.safetensors" "$OUT/"
    else
        echo "variant ${names[$i]} failed"; status=1
    fi
    tail -n 3 "$runs/${names[$i]}/train_output.log"
done
tar -czf "$OUT/ab_logs.tar.gz" --exclude="*.safetensors" --exclude="*.pt" -C "$runs" .
exit "$status"
