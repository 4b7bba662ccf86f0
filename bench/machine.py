"""What machine a benchmark ran on: numbers are comparable only within one run on one machine, and the
CPU model changes between sessions (AVX2-only EPYC, Zen 4 with AVX-512 BF16, Xeon with AMX)."""

from __future__ import annotations

import platform

import torch

from criticrm.machine import cpu_flags, cpu_model_name


def describe() -> dict:
    """CPU model, the instruction sets that decide bf16 speed, torch threads, and the GPU if any."""
    flags = cpu_flags()
    return {"cpu": cpu_model_name(), "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "avx2": "avx2" in flags, "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
