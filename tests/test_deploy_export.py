"""The export CLI end to end, atomic outputs under SIGKILL, the chat CLI, and SmolLM2 + a trained adapter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from deploy_fixtures import base_and_adapter, needs_llama_cpp

from deploy.export import check_disk, read_run
from deploy.modelfile import parse_modelfile

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run(*args: str, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=timeout,
        check=False,
    )


def _make_run(root: Path, template: str = "smollm2", family: str = "llama") -> Path:
    run = root / "runs" / "react-20261122-120000"
    run.mkdir(parents=True)
    base_dir, adapter_dir = base_and_adapter(root / "src", template, family)
    os.replace(adapter_dir, run / "adapter")
    (run / "config.yaml").write_text(
        textwrap.dedent(f"""\
        model:
          name: {base_dir}
        data:
          system_prompt: 'You are a household robot. Reply with "think: ..." or one command.'
        run:
          scenario: react
        """)
    )
    return run


def test_read_run_is_tolerant(tmp_path: Path) -> None:
    run = tmp_path / "roleplay-20260101-000000"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    info = read_run(run)  # no config.yaml at all
    assert info.scenario == "roleplay" and info.system_prompt is None
    (run / "config.yaml").write_text("model: qwen2.5-0.5b-instruct\nscenario: qa\nsystem_prompt: Be exact.\n")
    info = read_run(run)
    assert (info.base, info.scenario, info.system_prompt) == ("qwen2.5-0.5b-instruct", "qa", "Be exact.")
    (run / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match="config.yaml, line"):
        read_run(run)


def test_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    for args in (
        ["--run", str(tmp_path / "nope")],
        ["--adapter", str(tmp_path)],
        [],
        ["--base", "x", "--quant", "q9"],
    ):
        proc = _run("-m", "deploy.export", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")


def test_disk_space_is_checked_first(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="GB free"):
        check_disk(tmp_path, 1 << 60)


@needs_llama_cpp
@pytest.mark.slow
def test_export_cli_from_a_run_folder(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    proc = _run("-m", "deploy.export", "--run", str(run), "--quant", "f16,q8_0", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = run / "export"
    name = run.name
    assert (out / "merged" / "model.safetensors").is_file() and (out / "merged" / "tokenizer.json").is_file()
    for q in ("f16", "q8_0"):
        assert (out / f"{name}-{q}.gguf").is_file()
    parity = json.loads((out / "parity.json").read_text())
    assert parity["status"] == "passed", parity
    cmds = dict(parse_modelfile((out / "Modelfile").read_text()))
    assert cmds["from"] == f"./{name}-q8_0.gguf"
    assert cmds["system"] == 'You are a household robot. Reply with "think: ..." or one command.'
    assert cmds["temperature"] == "0"
    assert "ollama create" in proc.stdout
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))
    # chat with the GGUF, piped: answers one line, stops at "exit"
    chat = _run(
        "-m",
        "deploy.chat",
        str(out / f"{name}-q8_0.gguf"),
        "--max-new-tokens",
        "4",
        stdin="hello\nexit\nnever read\n",
    )
    assert chat.returncode == 0, chat.stderr[-1000:]
    assert chat.stdout.count("assistant> ") == 1


@needs_llama_cpp
@pytest.mark.slow
def test_no_merged_streams_into_gguf(tmp_path: Path) -> None:
    base_dir, adapter_dir = base_and_adapter(tmp_path, "qwen2_5", "qwen2")
    proc = _run(
        "-m",
        "deploy.export",
        "--adapter",
        str(adapter_dir),
        "--base",
        str(base_dir),
        "--quant",
        "q8_0",
        "--no-merged",
        "--out",
        str(tmp_path / "exp"),
        "--name",
        "tq",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "exp" / "merged").exists() and (tmp_path / "exp" / "tq-q8_0.gguf").is_file()


_SLOW_WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from deploy.lora import LoraAdapter
from deploy.merge import MergeSource, merge_to_folder
from deploy.gguf import write_gguf
from deploy.tokenizer_gguf import build_vocab
from transformers import AutoTokenizer
base, adapter, out, what = sys.argv[1:5]
src = MergeSource(Path(base), LoraAdapter.load(adapter))
slow_get, slow_rows = src.get, src.get_rows
def get(name):
    time.sleep(0.15)
    return slow_get(name)
def get_rows(name, start, stop):
    time.sleep(0.15)
    return slow_rows(name, start, stop)
src.get, src.get_rows = get, get_rows
if what == "gguf":
    tok = AutoTokenizer.from_pretrained(adapter)
    write_gguf(Path(out), config=src.config, vocab=build_vocab(tok, src.config["vocab_size"]), names=src.names(),
               shape_of=src.shape, get_f32=lambda n: get(n).float().numpy(), outtype="f16", progress=False)
else:
    merge_to_folder(src, Path(out), progress=False)
"""


@pytest.mark.slow
@pytest.mark.parametrize("what", ["gguf", "merged"])
def test_sigkill_mid_write_leaves_no_final_file(tmp_path: Path, what: str) -> None:
    base_dir, adapter_dir = base_and_adapter(tmp_path / "m")
    final = tmp_path / ("m.gguf" if what == "gguf" else "merged")
    script = tmp_path / "slow.py"
    script.write_text(_SLOW_WRITER.format(tests=str(ROOT / "tests")))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(base_dir), str(adapter_dir), str(final), what],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        partial = None
        while time.time() < deadline and partial is None:
            found = (
                list(tmp_path.glob(".m.*.tmp.gguf"))
                if what == "gguf"
                else [p for p in tmp_path.glob(".merged.*/.*.tmp.safetensors") if p.stat().st_size > 0]
            )
            partial = found[0] if found else None
            time.sleep(0.05)
        assert partial is not None, "the writer never started"
        time.sleep(0.3)  # well inside the ~3 s of tensor writes
        assert proc.poll() is None, "finished before the kill; slow it down"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not final.exists()


@needs_llama_cpp
@pytest.mark.slow
def test_smollm2_with_a_trained_adapter(tmp_path: Path) -> None:
    """SmolLM2-135M-Instruct + a LoRA trained for a few steps: f16 and q8_0 pass the gate, q4_k_m is written,
    and llama.cpp answers a prompt from the exported GGUF."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deploy.export import ExportPlan, run_export
    from models.registry import resolve_source

    base = Path(resolve_source("smollm2-135m-instruct"))
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"])
    )
    chats = [
        [
            {"role": "user", "content": "Your task is to: put a mug in the cabinet."},
            {"role": "assistant", "content": "think: First I need to find a mug."},
        ],
        [
            {"role": "user", "content": "You see a mug 1 on the countertop 1."},
            {"role": "assistant", "content": "take mug 1 from countertop 1"},
        ],
    ]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for step in range(4):
        ids = tok(
            tok.apply_chat_template(chats[step % 2], tokenize=False),
            return_tensors="pt",
            add_special_tokens=False,
        )["input_ids"]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    run = tmp_path / "react-demo"
    model.save_pretrained(run / "adapter")
    tok.save_pretrained(run / "adapter")
    plan = ExportPlan(
        out_dir=run / "export",
        name="smol-react",
        quants=["f16", "q8_0", "q4_k_m"],
        merged=False,
        base_dir=base,
        adapter_dir=run / "adapter",
        scenario="react",
        system_prompt=None,
        ollama=False,
        progress=False,
    )
    code = run_export(plan, log=lambda *_: None).code
    parity = json.loads((run / "export" / "parity.json").read_text())["files"]
    assert parity["smol-react-f16.gguf"]["status"] == "passed", parity["smol-react-f16.gguf"]
    assert parity["smol-react-q8_0.gguf"]["status"] == "passed", parity["smol-react-q8_0.gguf"]
    assert parity["smol-react-q8_0.gguf"]["top1_agreement"] >= 0.9
    assert parity["smol-react-q4_k_m.gguf"]["status"] in ("passed", "failed")  # measured, reported either way
    assert code == (0 if parity["smol-react-q4_k_m.gguf"]["status"] == "passed" else 1)
    cmds = dict(parse_modelfile((run / "export" / "Modelfile").read_text()))
    assert "ReAct" in cmds["system"] or "think" in cmds["system"]  # the scenario's default system prompt
    chat = _run(
        "-m",
        "deploy.chat",
        str(run / "export" / "smol-react-q8_0.gguf"),
        "--max-new-tokens",
        "16",
        stdin="What is the capital of France?\n",
    )
    assert chat.returncode == 0 and chat.stdout.startswith("assistant> ") and len(chat.stdout.strip()) > 12


def test_export_writes_the_ggufs_of_the_torch_free_converter(tmp_path: Path) -> None:
    """The merged folder -> GGUF step is deploy.convert's: the same bytes as converting ``merged/`` alone,
    with the vocabulary read from the tokenizer files (transformers agrees with them here)."""
    from deploy.convert import convert_folder
    from deploy.export import ExportPlan, run_export

    base_dir, adapter_dir = base_and_adapter(tmp_path / "m")
    out = tmp_path / "export"
    plan = ExportPlan(out_dir=out, name="m", quants=["f16", "q8_0"], merged=True, base_dir=base_dir,
                      adapter_dir=adapter_dir, scenario=None, system_prompt=None, verify=False, ollama=False,
                      progress=False)
    logs: list[str] = []
    assert run_export(plan, log=logs.append).code == 0
    assert not [line for line in logs if line.startswith("tokenizer:")], logs
    for q in ("f16", "q8_0"):
        alone = convert_folder(out / "merged", tmp_path / f"alone-{q}.gguf", q, model_name="m", progress=False)
        assert alone.path.read_bytes() == (out / f"m-{q}.gguf").read_bytes(), q


def test_vocab_comes_from_transformers_when_it_reads_the_files_otherwise(tmp_path: Path) -> None:
    from tiny import make_tokenizer

    from deploy.export import _vocab

    tok = make_tokenizer("smollm2")
    tok.save_pretrained(tmp_path)
    logs: list[str] = []
    assert _vocab(tok, tmp_path, {}, logs.append).tokens[-1] != "<|new|>" and not logs
    tok.add_special_tokens({"additional_special_tokens": ["<|new|>"]})  # no longer what the files say
    vocab = _vocab(tok, tmp_path, {}, logs.append)
    assert vocab.tokens[-1] == "<|new|>"
    assert len(logs) == 1 and "differently from its files" in logs[0] and "added tokens" in logs[0], logs


def test_k_quant_without_llama_cpp_says_how_to_get_it(tmp_path: Path) -> None:
    base_dir, _ = base_and_adapter(tmp_path)
    code = (
        "import sys; sys.modules['llama_cpp'] = None\n"
        "from deploy.export import main\n"
        f"sys.exit(main(['--base', {str(base_dir)!r}, '--quant', 'f16,q4_k_m', '--out', {str(tmp_path / 'o')!r}]))\n"
    )
    proc = _run("-c", code)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "pip install" in proc.stderr and "llama-cpp-python" in proc.stderr
    assert not (tmp_path / "o").exists()  # refused before writing anything
