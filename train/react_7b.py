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

from train.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:], scenario="react", default_preset="react_7b", doc=__doc__))
