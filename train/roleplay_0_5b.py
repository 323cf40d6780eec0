"""Roleplay character LoRA: Qwen2.5-0.5B-Instruct, r=16, alpha 32, dropout 0.1, lr 5e-5, 3 epochs, seq 512.

The character's system prompt stays in every sample; loss falls on the character's replies only.
Without a GPU or network the model becomes smollm2-135m-instruct (a line says so).

Usage:
    python train/roleplay_0_5b.py                                  # data/roleplay/dialogues.jsonl
    python train/roleplay_0_5b.py --preset cpu_demo                # the <=10 min CPU demo (SmolLM2-135M)
    python train/roleplay_0_5b.py --data my_chats.jsonl --epochs 2 --lora.r 8 --sft.warmup_steps 0.05
    python train/roleplay_0_5b.py --config runs/roleplay-20260101-120000/config.yaml            # repeat a run
    python train/roleplay_0_5b.py --config runs/roleplay-20260101-120000/config.yaml --resume   # continue it
    accelerate launch --config_file configs/accelerate/ddp_cpu.yaml train/roleplay_0_5b.py --preset cpu_demo
"""

import sys
from pathlib import Path

# Run as a file, this folder is sys.path[0]; drop it so train/*.py modules never shadow libraries.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from train.cli import one_line_errors, parse, report, start_backend  # noqa: E402

SCENARIO = "roleplay"  # run folder prefix: runs/roleplay-<time>
PRESET = "roleplay_0_5b"  # configs/roleplay_0_5b.yaml; --preset NAME picks another


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
