"""The quick_start.sh menu as a person uses it, in a real terminal (pexpect): environment check, the demo,
then export and chat on the demo's run, each entry's defaults accepted with Enter."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


NOISE = ("Warning", "warn(", "kernels-community", "Traceback", "deprecated")  # what a clean terminal lacks


def _menu(choice: str, timeout: int = 300, transcript: io.StringIO | None = None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TERM": "dumb"}
    child = pexpect.spawn("./quick_start.sh", cwd=str(ROOT), env=env, encoding="utf-8", timeout=timeout,
                          dimensions=(50, 200))
    child.logfile_read = transcript if transcript is not None else io.StringIO()
    child.expect("Choose: ")
    child.sendline(choice)
    return child


def test_menu_doctor_then_demo_then_export_and_chat():
    child = _menu("9")
    child.expect(r"\+ python -m train\.env_check")
    child.expect(r"backend: hf")
    child.expect(r"gguf: \S+")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    demo = io.StringIO()
    child = _menu("7", timeout=1200, transcript=demo)
    child.expect(r"==> done: (runs/demo-\d{8}-\d{6})")
    run = child.match.group(1)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    noisy = [line for line in demo.getvalue().splitlines() if any(n in line for n in NOISE)]
    assert not noisy, noisy  # the demo's terminal: no warnings that mean nothing to a user

    child = _menu("5")
    child.expect(rf"run to export \[{re.escape(run)}\]: ")
    child.sendline("")  # the latest run
    child.expect(r"GGUF types \(comma list\) \[q8_0\]: ")
    child.sendline("")
    child.expect(rf"\+ python -m deploy\.export --run {re.escape(run)} --quant q8_0")
    child.expect(r"parity q8_0: PASSED")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert (ROOT / run / "export" / "Modelfile").is_file()

    child = _menu("6")
    child.expect(rf"run to chat with \[{re.escape(run)}\]: ")
    child.sendline("")
    child.expect(rf"\+ python -m deploy\.chat {re.escape(run)}/export/\S+\.gguf")
    child.expect("you> ")
    child.sendline("Hello! Who are you?")
    child.expect(r"assistant> \S+")
    child.expect("you> ")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
