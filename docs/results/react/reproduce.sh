#!/usr/bin/env bash
# Every row of the README's ReAct table, in order. Run from the repository root after ./quick_start.sh setup.
# Wall times of each step are in the README; the runs write results.json files that are copied here.
#   bash docs/results/react/reproduce.sh            # everything (about 1.5 h of training + the evals)
#   SKIP_TRAIN=1 RUN=runs/react-cpu-main bash docs/results/react/reproduce.sh   # score an existing run
set -euo pipefail
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-.venv/bin/python}
RUN=${RUN:-runs/react-cpu-main}
OUT=docs/results/react
THREADS=${THREADS:-2}

step() { local name=$1; shift; echo "==> $name: $*"; local t0=$SECONDS; OMP_NUM_THREADS=$THREADS nice "$@"; echo "$name wall_s=$((SECONDS - t0))"; }
keep() { mkdir -p "$OUT/$1"; cp "$2/results.json" "$OUT/$1/results.json"; }

if [ -z "${SKIP_TRAIN:-}" ]; then
    step train "$PY" train/react_7b.py --preset cpu --run-dir "$RUN"   # resumable: add --resume
fi
for split in valid_unseen valid_seen; do
    step "tuned-hf-$split" "$PY" -m eval.react_eval --policy hf --model smollm2-135m-instruct \
        --adapter "$RUN/adapter" --dtype bfloat16 --batch-size 16 --split "$split" --out "$RUN/eval-$split"
    keep "tuned-hf-$split" "$RUN/eval-$split"
    step "base-hf-$split" "$PY" -m eval.react_eval --policy hf --model smollm2-135m-instruct \
        --dtype bfloat16 --batch-size 16 --split "$split" --out "runs/eval/base-$split"
    keep "base-hf-$split" "runs/eval/base-$split"
    for pol in random expert; do
        step "$pol-$split" "$PY" -m eval.react_eval --policy "$pol" --split "$split" --out "runs/eval/$pol-$split"
        keep "$pol-$split" "runs/eval/$pol-$split"
    done
done
step export "$PY" -m deploy.export --run "$RUN" --quant q8_0 --name react-smollm2
for split in valid_unseen valid_seen; do
    step "tuned-gguf-$split" "$PY" -m eval.react_eval --policy llamacpp \
        --model "$RUN/export/react-smollm2-q8_0.gguf" --split "$split" --out "$RUN/eval-gguf-$split"
    keep "tuned-gguf-$split" "$RUN/eval-gguf-$split"
done
"$PY" -m eval.compare \
    "base=$OUT/base-hf-valid_unseen/results.json" "tuned=$OUT/tuned-hf-valid_unseen/results.json" \
    "tuned GGUF q8_0=$OUT/tuned-gguf-valid_unseen/results.json" \
    "random=$OUT/random-valid_unseen/results.json" "expert=$OUT/expert-valid_unseen/results.json" \
    "base=$OUT/base-hf-valid_seen/results.json" "tuned=$OUT/tuned-hf-valid_seen/results.json" \
    "tuned GGUF q8_0=$OUT/tuned-gguf-valid_seen/results.json" \
    "random=$OUT/random-valid_seen/results.json" "expert=$OUT/expert-valid_seen/results.json" \
    --out "$OUT" --plot base tuned
