"""ReAct agent: Qwen2.5-7B-Instruct (Unsloth 4-bit), seq 2048, r=16; loss on every assistant turn.

Trains on ReAct trajectories (data/react/, our Trajectory JSON form, or alpaca/sharegpt ReAct data), each one
multi-turn chat: system instructions, the task, then think/act turns and observations.
Without a GPU or network the model becomes smollm2-135m-instruct (a line says so).

Usage:
    python train/react_7b.py                                  # GPU (Colab T4 fits: QLoRA, fp16)
    python train/react_7b.py --preset cpu --max-steps 20      # CPU smoke run on SmolLM2-135M
    python train/react_7b.py --data my_trajectories/ --lora.r 32 --sft.learning_rate 1e-4
    python train/react_7b.py --config runs/react-20260101-120000/config.yaml --resume
    python train/react_7b.py --plan-only                      # print the hardware plan and exit
"""

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from train.cli import one_line_errors, parse, report, start_backend  # noqa: E402

SCENARIO = "react"  # run folder prefix: runs/react-<time>
PRESET = "react_7b"  # configs/react_7b.yaml; --preset NAME picks another


def main(argv: list[str] | None = None) -> int:
    cli = parse(argv, scenario=SCENARIO, default_preset=PRESET, doc=__doc__)  # preset < CLI overrides
    info = start_backend(cli)  # Unsloth on an NVIDIA GPU (imported first), else transformers + PEFT
    from train import recipe  # imports transformers and TRL, after the backend

    with one_line_errors():
        session = recipe.plan_run(cli.cfg, info, explicit_model=cli.explicit_model)  # model + hardware plan
        if cli.plan_only:
            return 0
        recipe.open_run_dir(session, resume=cli.resume)  # run folder with the resolved config.yaml
        data = recipe.load_data(session)  # data_prep -> run/data, assistant-only labels
        training = recipe.build_trainer(session, data)  # LoRA model, SFTConfig, callbacks
        result = recipe.train_and_save(session, data, training)  # base loss, train, adapter, metrics, samples
    return report(result)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
