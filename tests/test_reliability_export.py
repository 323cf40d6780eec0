"""Reliability of the outputs: an export killed mid-write, a full disk, pickle weights, hostile system prompts.

Each check runs the real entry point (``python -m deploy.export``, ``python -m data_prep``) in a child process:
SIGKILL at the moment a temp file appears, a file-size limit (``RLIMIT_FSIZE``, the shim the issue allows when
no small filesystem can be mounted) or a small tmpfs for a full disk, and a pickle that runs code when loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from deploy_fixtures import needs_llama_cpp
from test_deploy_export import ENV, ROOT, _make_run
from test_gotemplate_go import go_run  # noqa: F401  (the session fixture that builds tests/go)
from tiny import TEMPLATE_NAMES, make_tokenizer

from deploy.gotemplate import render_ollama
from deploy.modelfile import build_modelfile, parse_modelfile, write_modelfile
from deploy.tokenizer_gguf import build_vocab


def _export(run: Path, *extra: str, preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.export", "--run", str(run), "--quant", "q8_0", "--no-progress",
         "--no-ollama", *extra],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600, check=False, preexec_fn=preexec,
    )


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


def _file_limit(limit: int) -> Callable[[], None]:
    """A child whose files may not grow past ``limit`` bytes: writes fail with EFBIG, as on a full disk."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the default action kills; ignored, write() fails
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@needs_llama_cpp
@pytest.mark.slow
@pytest.mark.parametrize("when", ["merged", "gguf"])
def test_export_killed_mid_write_then_rerun(tmp_path: Path, when: str) -> None:
    run = _make_run(tmp_path)
    out = run / "export"
    final = out / ("merged" if when == "merged" else f"{run.name}-q8_0.gguf")
    pattern = ".merged.*.tmp" if when == "merged" else f".{run.name}-q8_0.*.tmp.gguf"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.export", "--run", str(run), "--quant", "q8_0", "--no-progress", "--no-ollama"],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not list(out.glob(pattern)):
            time.sleep(0.002)
        assert proc.poll() is None, "the export finished before its temp file was seen"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert list(out.glob(pattern)), "the killed writer's temp should still be there (SIGKILL runs no cleanup)"
    assert not final.exists() and not (out / "Modelfile").exists()

    again = _export(run)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "left by an interrupted export" in again.stdout
    assert not list(out.glob(".*")), list(out.glob(".*"))  # every stale temp swept
    assert json.loads((out / "parity.json").read_text())["status"] == "passed"  # llama.cpp loaded the GGUF
    assert dict(parse_modelfile((out / "Modelfile").read_text()))["from"] == f"./{run.name}-q8_0.gguf"


@needs_llama_cpp
@pytest.mark.slow
def test_export_on_a_full_disk_keeps_the_old_outputs(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    first = _export(run)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _digests(run / "export")
    # a rerun with a new name, on a "disk" where no file may pass 1 MB: the merged weights cannot be written
    full = _export(run, "--name", "again", preexec=_file_limit(1 << 20))
    line = _one_line_error(full)
    assert "out of space" in line and "File too large" in line, line
    assert _digests(run / "export") == before  # nothing replaced, nothing partial, no temps left
    assert not list((run / "export").glob(".*"))


def _sharegpt(path: Path, n: int, seed: int) -> Path:
    rows = [{"conversations": [{"from": "human", "value": f"question {seed}-{i} " + "x" * 200},
                               {"from": "gpt", "value": f"answer {seed}-{i} " + "y" * 200}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _data_prep(src: Path, out: Path, preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "data_prep", "--input", str(src), "--out", str(out), "--no-progress"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False, preexec_fn=preexec,
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs (root may mount one: a real ENOSPC); else a plain folder, and the test uses the size limit."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                             capture_output=True, check=False).returncode == 0
    yield mnt if mounted else tmp_path / "plain"
    if mounted:
        subprocess.run(["umount", str(mnt)], check=False)


def test_data_prep_on_a_full_disk_keeps_the_old_set(tmp_path: Path, small_disk: Path) -> None:
    out = small_disk / "prepared"
    ok = _data_prep(_sharegpt(tmp_path / "small.jsonl", 200, 0), out)
    assert ok.returncode == 0, ok.stderr[-2000:]
    before = _digests(out)
    on_tmpfs = small_disk.name == "disk"
    big = _sharegpt(tmp_path / "big.jsonl", 6000, 1)  # about 3 MB of train.jsonl: more than the disk holds
    full = _data_prep(big, out, preexec=None if on_tmpfs else _file_limit(1 << 20))
    line = _one_line_error(full)
    assert "out of space" in line and ("No space left" in line or "File too large" in line), line
    assert _digests(out) == before  # train, test, rejects, stats and plot all from the first run
    assert not list(out.glob(".*"))


_EVIL = """
import os, pickle, sys
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
with open(sys.argv[1], "wb") as f:
    pickle.dump({"base_model.model.x": Evil()}, f)
"""


@needs_llama_cpp
@pytest.mark.slow
def test_export_of_pickle_weights(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    run = _make_run(tmp_path)
    adapter = run / "adapter"
    state = load_file(str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_model.safetensors").unlink()
    torch.save(state, adapter / "adapter_model.bin")
    refused = _one_line_error(_export(run))
    assert "pickle" in refused and "--allow-pickle" in refused
    assert not (run / "export" / "Modelfile").exists()

    ok = _export(run, "--allow-pickle")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads((run / "export" / "parity.json").read_text())["status"] == "passed"
    converted = load_file(str(run / "export" / "from-pickle" / "adapter" / "adapter_model.safetensors"))
    assert converted.keys() == state.keys() and all(torch.equal(converted[k], state[k]) for k in state)

    # a pickle that runs code: never unpickled without the flag, refused by the restricted loader with it
    sentinel = tmp_path / "pwned"
    subprocess.run([sys.executable, "-c", _EVIL, str(adapter / "adapter_model.bin"), str(sentinel)], check=True)
    assert "pickle" in _one_line_error(_export(run))
    assert "not a plain tensor file" in _one_line_error(_export(run, "--allow-pickle"))
    assert not sentinel.exists()


HOSTILE = {
    "template_braces": "Reply with {{ .Prompt }} or {{ end }} or {{/* x */}} and {{- if .System }}x{{ end }}",
    "triple_quotes_mid_line": 'Quote """like this""" and "this", then \\"""escaped\\""" too',
    "last_line_triple_quote": 'first line\nthe last line ends with """',
    "modelfile_commands": 'ok\nFROM /etc/passwd\nPARAMETER num_ctx 1\nADAPTER ./evil.gguf\n# not a comment\nSYSTEM "x"',
    "jinja_and_go_mix": "{% raw %}{{ messages }}{% endraw %} {{ range .Messages }}loop{{ end }} $x := 1",
    "unicode_and_blank_lines": "Réponds 中文 😀\n\n\n\ttabbed",  # not trailing blanks: Llama 3 trims them
}


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_system_prompt_survives_the_modelfile(tmp_path: Path, template: str, case: str) -> None:
    tok = make_tokenizer(template)
    vocab = build_vocab(tok)
    system = HOSTILE[case]
    spec = build_modelfile(tok, "m.gguf", add_bos=vocab.add_bos, end_of_turn=vocab.end_of_turn, system=system)
    parsed = parse_modelfile(write_modelfile(spec, tmp_path / "Modelfile").read_text())
    assert [k for k, _ in parsed if k in ("from", "adapter", "template", "system")] == ["from", "template", "system"]
    assert dict(parsed)["system"] == system and dict(parsed)["from"] == "./m.gguf"
    # Ollama hands SYSTEM to the TEMPLATE as data: braces in it are text, and the prompt is what HF renders
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]
    want = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert render_ollama(spec.template, msgs) == want


def test_hostile_system_prompt_renders_verbatim_in_go(go_run) -> None:  # noqa: F811
    tok = make_tokenizer("qwen2_5")
    spec = build_modelfile(tok, "m.gguf", add_bos=False, end_of_turn=["<|im_end|>"])
    cases = [(spec.template, [{"role": "system", "content": s}, {"role": "user", "content": "hi"}])
             for s in HOSTILE.values()]
    for (_, msgs), got in zip(cases, go_run(cases), strict=True):
        assert "error" not in got, got
        assert got["output"] == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def test_unrepresentable_system_prompt_is_refused_before_any_work(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    line = _one_line_error(_export(run, "--system", 'ends with """\nthen more'))
    assert "three double quotes" in line
    assert not (run / "export").exists()
