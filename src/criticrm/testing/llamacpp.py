"""Start a llama.cpp server for the OpenAI-compatible backend: llama-cpp-python's `llama_cpp.server`, or
llama.cpp's own `llama-server` binary (parallel slots; the benchmarks' peer).

Used by the tests and the benchmarks to serve a GGUF file on loopback. llama-cpp-python's server is
started with `--logits_all true`: without it that server refuses `logprobs`, which the probability
score needs (the price: logits are kept for every prompt position, ~n_ctx x vocab floats of memory).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx


def llamacpp_available() -> str | None:
    """None when llama-cpp-python's server can be started here, else the reason it cannot."""
    try:
        import llama_cpp.server.app  # noqa: F401 - the import is the check (it needs fastapi, uvicorn, ...)
    except Exception as error:  # ImportError, or a shared library that fails to load
        return (f"llama-cpp-python's server is not importable ({type(error).__name__}: {error}); "
                f"install it with: pip install 'llama-cpp-python[server]'")
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def llamacpp_server(model_path: str | Path, host: str = "127.0.0.1", port: int | None = None, n_ctx: int = 4096,
                    threads: int | None = None, startup_timeout: float = 120, logits_all: bool = True,
                    extra_args: Sequence[str] = ()) -> Iterator[str]:
    """Serve `model_path` with `python -m llama_cpp.server`; yields the base URL (`http://host:port`).

    Waits until `GET /v1/models` answers and a short completion succeeds; raises RuntimeError with
    the end of the server's log when it exits or does not answer within `startup_timeout` seconds.
    On exit the server is terminated (killed if it does not stop within 10 s).
    """
    reason = llamacpp_available()
    if reason:
        raise RuntimeError(reason)
    _check_model(model_path)
    port = port or free_port(host)
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", host,
               "--port", str(port), "--n_ctx", str(n_ctx), "--logits_all", str(logits_all).lower()]
    if threads:
        command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    with _serve(command + list(extra_args), f"http://{host}:{port}", startup_timeout) as url:
        yield url


@contextlib.contextmanager
def native_llama_server(binary: str | Path, model_path: str | Path, slots: int, host: str = "127.0.0.1",
                        port: int | None = None, context_per_slot: int = 2048, threads: int | None = None,
                        startup_timeout: float = 120, extra_args: Sequence[str] = ()) -> Iterator[str]:
    """Serve `model_path` with llama.cpp's own `llama-server` binary; yields the base URL.

    Unlike llama-cpp-python's server (one request at a time), llama.cpp's server decodes `slots`
    requests together (continuous batching) and keeps each slot's last prompt in its KV cache, so a
    request that shares a prefix with its slot's previous one (a judge template's few-shot turns)
    computes only the rest. The context is shared by the slots (`-c` = slots x `context_per_slot`);
    flash attention is on. The binary is built from llama.cpp's sources, e.g. those vendored in the
    llama-cpp-python sdist: `cmake -B build -DLLAMA_CURL=OFF && cmake --build build --target llama-server`
    (BENCHMARKS.md has the flags used there: a native build's AMX kernels died on a VM's Xeon).
    """
    if not Path(binary).is_file():
        raise FileNotFoundError(f"llama-server binary not found: {binary}")
    _check_model(model_path)
    port = port or free_port(host)
    command = [str(binary), "--model", str(model_path), "--host", host, "--port", str(port),
               "--ctx-size", str(slots * context_per_slot), "--parallel", str(slots), "--flash-attn", "on"]
    if threads:
        command += ["--threads", str(threads), "--threads-batch", str(threads)]
    with _serve(command + list(extra_args), f"http://{host}:{port}", startup_timeout) as url:
        yield url


def _check_model(model_path: str | Path) -> None:
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"model file not found: {model_path}")


@contextlib.contextmanager
def _serve(command: list[str], base_url: str, startup_timeout: float) -> Iterator[str]:
    """Run a server `command` until the block ends, once it answers at `base_url` (see `_wait_until_ready`)."""
    with tempfile.TemporaryFile(mode="w+b", prefix="llamacpp-server-") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            _wait_until_ready(process, base_url, startup_timeout, log)
            yield base_url
        finally:
            _stop(process)


_READINESS_PROMPT = "The quick brown fox jumps over the lazy dog, and then"  # several tokens: a batched pass


def _wait_until_ready(process: subprocess.Popen, base_url: str, timeout: float, log) -> None:
    """Wait for `GET /v1/models`, then complete a short prompt: a server that lists its model can
    still die on its first batched forward pass (a build with instructions this machine does not
    run), and that should fail here, with its log, not as "connection refused" in a later request."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(_exit_message(process, "during start-up", log))
            try:
                if client.get(f"{base_url}/v1/models").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama.cpp server did not answer {base_url}/v1/models within {timeout:.0f} s:\n"
                                   f"{_tail(log)}")
            time.sleep(0.2)
        try:
            reply = client.post(f"{base_url}/v1/completions", json={"prompt": _READINESS_PROMPT, "max_tokens": 2},
                                timeout=max(deadline - time.monotonic(), 10.0))
        except httpx.TransportError as error:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)  # a server that just crashed may not be reaped yet
            if process.returncode is not None:
                raise RuntimeError(_exit_message(process, "on its first completion", log)) from None
            raise RuntimeError(f"llama.cpp server failed a short completion: {error}\n{_tail(log)}") from None
        if reply.status_code != 200:
            raise RuntimeError(f"llama.cpp server answered a short completion with HTTP {reply.status_code}: "
                               f"{reply.text[:300]}\n{_tail(log)}")


def _exit_message(process: subprocess.Popen, when: str, log) -> str:
    message = f"llama.cpp server exited with code {process.returncode} {when}"
    if process.returncode == -signal.SIGILL:
        message += (" (illegal instruction: llama.cpp was compiled with instructions this machine does not "
                    "run, e.g. a -march=native build from another CPU, or AMX that a VM disallows; reinstall "
                    "llama-cpp-python with scripts/setup.sh --dev, which builds it portable, or rebuild "
                    "llama-server with -DGGML_NATIVE=OFF and the AMX options off)")
    return f"{message}:\n{_tail(log)}"


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(log, chars: int = 3000) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode("utf-8", errors="replace")[-chars:]
