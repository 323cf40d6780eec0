"""Fallback GGUF conversion with llama.cpp's own ``convert_hf_to_gguf.py``, for architectures our writer lacks.

The converter is not installed by ``llama-cpp-python``'s wheel, but its source distribution carries it under
``vendor/llama.cpp/``. So, once per version:

1. ``pip download --no-binary llama-cpp-python --no-deps llama-cpp-python==<installed version>`` (76 MB);
2. extract only what the script needs: ``convert_hf_to_gguf.py``, its ``conversion/`` package (one module
   per model family), ``gguf-py/gguf`` and ``models/templates`` (chat templates some families read), plus
   the licence, into ``<cache>/llama-cpp-python-<version>/`` (``models.registry.cache_dir()``).

The version is the installed ``llama-cpp-python``'s (else the pin in ``pyproject.toml``), so the converter
writes exactly the GGUF dialect that the llama.cpp we load for the parity gate reads. Set
``UNSLOTH_RECIPES_LLAMACPP_CONVERTER`` to a folder holding ``convert_hf_to_gguf.py`` (a llama.cpp checkout)
to skip the download.

The script runs in a subprocess of this interpreter with ``PYTHONPATH=<extracted gguf-py>``: it needs that
vendored ``gguf`` (its tensor maps and keys are newer than PyPI's ``gguf==0.19.0`` that our writer pins).
At module level it imports ``torch``, ``numpy``, ``transformers`` and ``yaml``; ``sentencepiece`` only for
SentencePiece tokenizers (Gemma, Llama 2), ``mistral_common`` only for Mistral-format folders.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fileio.atomic import atomic_dir, atomic_path

CONVERTER_ENV = "UNSLOTH_RECIPES_LLAMACPP_CONVERTER"
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
PACKAGE = "llama-cpp-python"
# Imported at the top of the converter and its gguf-py: without them it cannot start at all.
MODULE_REQUIREMENTS = ("torch", "numpy", "transformers", "yaml")
_VENDOR = "vendor/llama.cpp/"
_KEEP = ("convert_hf_to_gguf.py", "LICENSE", "conversion/", "gguf-py/gguf/", "models/templates/")
_TAIL_LINES = 15
_REPO = Path(__file__).resolve().parents[1]


class ConverterError(RuntimeError):
    """The fallback converter could not be fetched or failed; the message says why (and its stderr tail)."""


@dataclass(frozen=True)
class Converter:
    """An extracted ``convert_hf_to_gguf.py`` with the ``gguf-py`` it must import."""

    root: Path
    version: str

    @property
    def script(self) -> Path:
        return self.root / "convert_hf_to_gguf.py"

    @property
    def gguf_py(self) -> Path:
        return self.root / "gguf-py"

    def is_complete(self) -> bool:
        return self.script.is_file() and (self.root / "conversion").is_dir() and (self.gguf_py / "gguf").is_dir()


def pinned_version() -> str:
    """The installed llama-cpp-python's version, else the ``llama-cpp-python==X`` pin in pyproject.toml."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = _REPO / "pyproject.toml"
    found = re.search(r"llama-cpp-python==([\w.]+)", pyproject.read_text()) if pyproject.is_file() else None
    if found is None:
        raise ConverterError(f"{PACKAGE} is not installed and no pin was found in {pyproject}")
    return found.group(1)


def converter_dir(version: str) -> Path:
    """Where the converter of ``version`` is (or will be) extracted."""
    from models.registry import cache_dir

    return cache_dir() / f"{PACKAGE}-{version}"


def ensure_converter(version: str | None = None, log: Any = print) -> Converter:
    """The converter, from ``$UNSLOTH_RECIPES_LLAMACPP_CONVERTER`` or the cache; downloaded once if absent."""
    override = os.environ.get(CONVERTER_ENV)
    if override:
        conv = Converter(Path(override).expanduser(), "local")
        if not conv.is_complete():
            raise ConverterError(
                f"${CONVERTER_ENV}={override}: needs convert_hf_to_gguf.py, conversion/ and gguf-py/gguf "
                "(a llama.cpp checkout)"
            )
        return conv
    version = version or pinned_version()
    conv = Converter(converter_dir(version), version)
    if conv.is_complete():
        return conv
    with tempfile.TemporaryDirectory(prefix="llama-cpp-sdist-") as tmp:
        sdist = download_sdist(version, Path(tmp))
        with atomic_dir(conv.root) as staging:
            n = extract_converter(sdist, staging)
    log(f"llama.cpp converter: extracted convert_hf_to_gguf.py ({n} files) from the {PACKAGE} {version} "
        f"source distribution into {conv.root}")
    return conv


def download_sdist(version: str, dest: Path) -> Path:
    """``pip download`` the source distribution of llama-cpp-python ``version`` into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", PACKAGE,
           "--disable-pip-version-check", "--dest", str(dest), f"{PACKAGE}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(dest.glob("llama_cpp_python-*.tar.gz"))
    if proc.returncode != 0 or not found:
        raise ConverterError(
            f"could not download the {PACKAGE} {version} source distribution, which carries llama.cpp's "
            f"convert_hf_to_gguf.py (pip exit {proc.returncode}); without network, set ${CONVERTER_ENV} to a "
            f"llama.cpp checkout. pip said:\n{_tail(proc.stderr or proc.stdout)}"
        )
    return found[0]


def extract_converter(sdist: Path, dest: Path) -> int:
    """Copy the converter's files out of ``vendor/llama.cpp/`` in ``sdist`` into ``dest``; returns the count."""
    n = 0
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            rel = _vendored_path(member.name)
            if rel is None or not member.isfile() or "__pycache__" in rel:
                continue
            src = tar.extractfile(member)
            if src is None:
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(src.read())
            n += 1
    if not (dest / "convert_hf_to_gguf.py").is_file():
        raise ConverterError(f"{sdist.name} has no {_VENDOR}convert_hf_to_gguf.py")
    return n


def _vendored_path(name: str) -> str | None:
    """``llama_cpp_python-X/vendor/llama.cpp/<rel>`` -> ``rel`` when it is one we keep (and is safe)."""
    _, _, rest = name.partition("/")
    if not rest.startswith(_VENDOR):
        return None
    rel = rest[len(_VENDOR):]
    if ".." in Path(rel).parts or rel.startswith("/"):
        return None
    return rel if any(rel == k or (k.endswith("/") and rel.startswith(k)) for k in _KEEP) else None


def missing_modules() -> list[str]:
    """The converter's module-level imports this interpreter lacks."""
    return [m for m in MODULE_REQUIREMENTS if importlib.util.find_spec(m) is None]


def convert(
    model_dir: Path,
    out_path: Path,
    outtype: str = "f16",
    *,
    converter: Converter | None = None,
    model_name: str | None = None,
    probe: bool = True,
    log: Any = print,
) -> Path:
    """Convert the HF folder ``model_dir`` to ``out_path`` with llama.cpp's converter, atomically.

    With ``probe`` the result must also load and run in llama.cpp (in a subprocess) before it is moved to
    ``out_path``, so a GGUF that would crash llama.cpp never appears there.
    """
    if outtype not in OUTTYPES:
        raise ValueError(f"llama.cpp's converter writes {', '.join(OUTTYPES)}; got {outtype!r}")
    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}/config.json: missing; pass a Hugging Face model folder")
    missing = missing_modules()
    if missing:
        raise ConverterError(f"llama.cpp's converter needs {', '.join(missing)}: pip install {' '.join(missing)}")
    conv = converter or ensure_converter(log=log)
    with atomic_path(out_path) as tmp:
        cmd, env = converter_command(conv, model_dir, tmp, outtype, model_name)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise ConverterError(_failure_message(model_dir, proc))
        if probe:
            probe_load(tmp, model_dir)
    return Path(out_path)


# Load, tokenize and run a few tokens: what the parity gate does first, in a child that may crash alone.
_PROBE = """
import sys
from deploy.llamacpp import load_llama
llm = load_llama(sys.argv[1], n_ctx=64, logits_all=False)
ids = llm.tokenize("Hello, world!\\n12 + 30 = 42 <|im_end|>".encode(), add_bos=True, special=True)
llm.eval(ids[:8])
llm.close()
"""


def probe_load(gguf_path: Path, model_dir: Path | None = None, timeout: float = 900) -> None:
    """Check llama.cpp can load and run ``gguf_path``, in a subprocess.

    llama.cpp aborts the whole process (a C++ exception) on some malformed GGUFs, which would take the export
    and its parity gate down with it. Skipped when llama-cpp-python is not importable.
    """
    from deploy.llamacpp import llama_cpp_available

    if not llama_cpp_available()[0]:
        return
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO), env.get("PYTHONPATH", "")) if p)
    env["GGML_NO_BACKTRACE"] = "1"  # on abort ggml would attach gdb and bury the one line that says why
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, str(gguf_path)], capture_output=True, text=True,
                              env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ConverterError(f"llama.cpp did not load the converted GGUF within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise ConverterError(
            f"llama.cpp cannot load the GGUF that its converter wrote from {model_dir} (exit {proc.returncode})."
            f"{_vocab_hint(gguf_path, model_dir)} Last lines of its output:\n{_tail(proc.stderr or proc.stdout)}"
        )


def _vocab_hint(gguf_path: Path, model_dir: Path | None) -> str:
    """The known cause: a byte-level BPE tokenizer.json that also says ``byte_fallback`` (as transformers
    writes for tokenizers it rebuilt from a GGUF) is read by the Llama converter as SentencePiece."""
    import json

    import gguf

    tj_file = Path(model_dir or "") / "tokenizer.json"
    if model_dir is None or not tj_file.is_file():
        return ""
    field = gguf.GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.model")
    tj = json.loads(tj_file.read_text(encoding="utf-8"))
    byte_level = "ByteLevel" in json.dumps(tj.get("pre_tokenizer"))
    if field is not None and field.contents() == "llama" and byte_level:
        return (" The converter read this byte-level BPE tokenizer as a SentencePiece one (tokenizer.json has "
                "byte_fallback=true); export with --converter ours where the architecture allows it.")
    return ""


def converter_command(
    conv: Converter, model_dir: Path, out_path: Path, outtype: str, model_name: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run the converter on ``model_dir`` (also for benchmarks)."""
    cmd = [sys.executable, str(conv.script), str(model_dir), "--outfile", str(out_path), "--outtype", outtype]
    if model_name:
        cmd += ["--model-name", model_name]
    return cmd, _converter_env(conv)


def _converter_env(conv: Converter) -> dict[str, str]:
    """Our environment with the vendored gguf-py first on the path and the Hub offline (the folder is local)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(conv.gguf_py), env.get("PYTHONPATH", "")) if p)
    env.pop("NO_LOCAL_GGUF", None)  # it would make the script skip its own gguf-py
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def _failure_message(model_dir: Path, proc: subprocess.CompletedProcess[str]) -> str:
    text = proc.stderr or proc.stdout or ""
    hint = ""
    missing = re.findall(r"No module named '([\w.]+)'", text)
    if missing:
        module = missing[-1].split(".")[0]
        hint = f" It needs the Python package {module!r}: pip install {module}."
    elif "is not supported" in text:
        hint = " llama.cpp has no converter for this architecture either."
    return (
        f"llama.cpp's convert_hf_to_gguf.py failed on {model_dir} (exit {proc.returncode}).{hint} "
        f"Last lines of its output:\n{_tail(text)}"
    )


def _tail(text: str, n: int = _TAIL_LINES) -> str:
    lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


@dataclass
class TokenFacts:
    """What the Modelfile needs to know about the tokenizer (the part of ``GGUFVocab`` it reads)."""

    add_bos: bool
    end_of_turn: list[str]


def token_facts(gguf_path: Path, tokenizer: Any) -> TokenFacts:
    """``add_bos`` as llama.cpp will apply it (from the GGUF), and the end-of-turn tokens the chat template uses."""
    import gguf

    from deploy.tokenizer_gguf import EOT_CANDIDATES

    reader = gguf.GGUFReader(str(gguf_path))
    field = reader.fields.get("tokenizer.ggml.add_bos_token")
    add_bos = bool(field.contents()) if field is not None else False
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = template.get("default") or ""
    vocab = tokenizer.get_vocab()
    end = [t for t in EOT_CANDIDATES if t in vocab and t in template]
    if tokenizer.eos_token and tokenizer.eos_token not in end:
        end.append(tokenizer.eos_token)
    return TokenFacts(add_bos, end)
