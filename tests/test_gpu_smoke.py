"""bench/gpu_smoke.py on this CPU: the same steps as on a GPU (hf backend instead of Unsloth), both phases."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_smoke_script_runs_both_phases_on_cpu(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_smoke.py"), "--work", str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    lines = r.stdout.strip().splitlines()
    assert re.fullmatch(r"gpu_smoke=ok backend=hf tok_s=\d+ peak_vram_gb=0\.00", lines[-1]), lines[-1]
    phases = [ln for ln in lines if ln.startswith(("lora16:", "qlora4:"))]
    assert len(phases) == 2 and all("parity=llama.cpp" in ln for ln in phases), phases
    for phase in ("lora16", "qlora4"):
        assert (tmp_path / phase / f"run-{phase}" / "export" / "smoke-f16.gguf").is_file()
