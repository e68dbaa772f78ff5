"""llama.cpp's own HTTP server, ``llama-server``, built from the sources sazanami already runs.

    python bench/llama_server.py build    # prints the binary's path; builds it on first use

The sources are the ``vendor/llama.cpp`` tree inside the llama-cpp-python sdist of the version
the Makefile installs (``LLAMA_CPP_PYTHON`` here, 0.3.36), so the baseline runs the same
kernels as sazanami's llamacpp backend. Only the ``llama-server`` target is built, with the
Makefile's CPU flags (``GGML_NATIVE=OFF`` and AVX-512 spelled out: these VMs advertise AMX,
which traps) and ``LLAMA_CURL=OFF``. The binary is cached under ``~/.cache/sazanami/llama-server/<version>/``;
later calls return it at once. Nothing from llama.cpp is committed to this repository.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"
CACHE = Path.home() / ".cache" / "sazanami" / "llama-server"
CMAKE_ARGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_AVX512=ON",
    "-DGGML_AVX512_VBMI=ON",
    "-DGGML_AVX512_VNNI=ON",
    "-DGGML_AVX512_BF16=ON",
    "-DBUILD_SHARED_LIBS=OFF",
]


def binary_path(version: str = LLAMA_CPP_PYTHON) -> Path:
    """Where the cached ``llama-server`` for llama-cpp-python ``version`` lives."""
    return CACHE / version / "llama-server"


def build(version: str = LLAMA_CPP_PYTHON, jobs: int = 2) -> Path:
    """Return the cached ``llama-server`` binary, building it first if it is missing.

    Downloads the llama-cpp-python ``version`` sdist with pip (no wheels, no dependencies),
    configures its vendored llama.cpp with ``CMAKE_ARGS`` and builds the ``llama-server``
    target with ``jobs`` parallel jobs (about 9 minutes on 2 cores). The source and build
    trees stay under the cache folder, so an interrupted build resumes where it stopped.
    """
    binary = binary_path(version)
    if binary.is_file():
        return binary
    root = CACHE / version
    src = root / "src"
    if not (src / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                 f"llama-cpp-python=={version}", "-d", tmp],
                check=True,
                stdout=sys.stderr,
            )  # fmt: skip
            (sdist,) = Path(tmp).glob("llama_cpp_python-*.tar.gz")
            with tarfile.open(sdist) as tar:
                tar.extractall(tmp, filter="data")
            unpacked = Path(tmp) / sdist.name.removesuffix(".tar.gz")
            shutil.rmtree(src, ignore_errors=True)
            root.mkdir(parents=True, exist_ok=True)
            shutil.move(str(unpacked), str(src))
    llama_cpp, build_dir = src / "vendor" / "llama.cpp", root / "build"
    subprocess.run(["cmake", "-S", str(llama_cpp), "-B", str(build_dir), *CMAKE_ARGS], check=True, stdout=sys.stderr)
    subprocess.run(
        ["cmake", "--build", str(build_dir), "--target", "llama-server", "-j", str(jobs)],
        check=True,
        stdout=sys.stderr,
    )
    shutil.copy2(build_dir / "bin" / "llama-server", binary)
    return binary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["build", "path"], help="build: build if missing, print the path")
    ap.add_argument("--version", default=LLAMA_CPP_PYTHON, help="llama-cpp-python sdist version")
    ap.add_argument("--jobs", type=int, default=2, help="parallel build jobs")
    args = ap.parse_args(argv)
    if args.command == "path":
        print(binary_path(args.version))
        return
    binary = build(args.version, args.jobs)
    print(binary)  # the tools' output went to stderr: `$(python bench/llama_server.py build)` works


if __name__ == "__main__":
    main()
