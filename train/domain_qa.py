"""Domain QA: Qwen2.5-1.5B-Instruct on question/answer data (fish care by default), optional system prompt.

Reads any QA/alpaca/sharegpt/openai file, or LLaMA-Factory datasets through their dataset_info.json.
Without a GPU or network the model becomes smollm2-135m-instruct (a line says so).

Usage:
    python train/domain_qa.py                                            # data/domain_qa/fish_care.jsonl
    python train/domain_qa.py --preset cpu                               # CPU run on SmolLM2-135M
    python train/domain_qa.py --data faq.jsonl --data.question_field q --data.answer_field a
    python train/domain_qa.py --system-prompt "You are an aquarium fish-care expert."
    python train/domain_qa.py --data.dataset_info LLaMA-Factory/data/dataset_info.json --data.dataset [fish]
    python train/domain_qa.py --config runs/domain_qa-20260101-120000/config.yaml --resume
"""

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from train.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:], scenario="domain_qa", default_preset="domain_qa", doc=__doc__))
