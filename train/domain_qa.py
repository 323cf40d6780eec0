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

from train.cli import one_line_errors, parse, report, start_backend  # noqa: E402

SCENARIO = "domain_qa"  # run folder prefix: runs/domain_qa-<time>
PRESET = "domain_qa"  # configs/domain_qa.yaml; --preset NAME picks another


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
