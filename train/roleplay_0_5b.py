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

from train.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:], scenario="roleplay", default_preset="roleplay_0_5b", doc=__doc__))
