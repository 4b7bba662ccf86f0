"""The linear layers of the cascade engine: fused, and computed the fastest way the CPU allows.

A decoding step of a 135M model is mostly small matrix products (64 rows against 576-wide weights), so how
each product is computed is most of its cost. Several layers that read the same input (q/k/v, gate/up)
become one product, split afterwards, computed by one of:

- `PackedBf16Linear` (bf16 CPU weights): oneDNN's prepacked weight layout, so the weight is not reordered
  at every call. Exact up to bf16 rounding; on by itself wherever it applies.
- `DynamicInt8Linear` (`quantize: int8`, any CPU with fbgemm): int8 weights per output channel and
  activations quantized per call (PyTorch's dynamic quantization). Faster where float arithmetic is slow
  (an AVX2-only CPU without fast bf16), and not exact: an opt-in, because what it samples is not what the
  float model samples (BENCHMARKS.md measures by how much).

Everything else (a LoRA-wrapped layer, a GPU, fp32 without `quantize`) runs the layers' own modules.
The weights are a snapshot: an engine is built for a model whose weights no longer change.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from criticrm.errors import ConfigError

Quantize = Literal["none", "int8"]


class FusedLinear:
    """One matmul over the concatenated weights of `sizes`-wide layers; the call returns each layer's part."""

    def __init__(self, sizes: list[int]):
        self.sizes = sizes

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        flat = x.reshape(-1, x.shape[-1])
        out = self.matmul(flat).view(*x.shape[:-1], -1)
        return out if len(self.sizes) == 1 else out.split(self.sizes, dim=-1)

    def matmul(self, flat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PackedBf16Linear(FusedLinear):
    """bf16 weights prepacked for oneDNN.

    `F.linear` on a bf16 CPU tensor reorders the weight into oneDNN's blocked layout at every call; for
    the small batches of decoding that reorder is a third of the matmul's time. Prepacked (what
    torch.compile's CPU backend does with frozen weights) the result is ~30-40% faster at decoding's 32-64
    rows and 5-20% up to 512 (the default model's projection shapes, Zen 4, 2026-12-07); larger inputs
    (prefill chunks) use the plain weight, where packing stops paying.
    """

    PACKED_ROWS = 512

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, sizes: list[int]):
        super().__init__(sizes)
        self.weight, self.bias = weight, bias
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 32)

    @staticmethod
    def applies(weight: torch.Tensor) -> bool:
        return weight.dtype == torch.bfloat16 and weight.device.type == "cpu" and _onednn_has_bf16()

    def matmul(self, flat: torch.Tensor) -> torch.Tensor:
        if flat.shape[0] <= self.PACKED_ROWS:
            return torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [], "")
        return torch.nn.functional.linear(flat, self.weight, self.bias)


class DynamicInt8Linear(FusedLinear):
    """int8 weights (symmetric, one scale per output channel); each call quantizes its input per tensor.

    fbgemm's kernels multiply unsigned 8-bit activations by signed 8-bit weights in 16-bit pair sums
    (AVX2's `vpmaddubsw`), which saturate for large products; `reduce_range` keeps activations to 7 bits so
    they cannot, as PyTorch's own `quantize_dynamic` does on x86. Inputs of any float dtype are computed in
    float32 and returned in their own dtype.
    """

    REDUCE_RANGE = True

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, sizes: list[int]):
        super().__init__(sizes)
        weight = weight.float()
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
        zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
        with _quantized_engine(), _quiet_deprecation():
            quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(quantized, None if bias is None else bias.float())

    @staticmethod
    def check_supported(weight: torch.Tensor) -> None:
        if weight.device.type != "cpu":
            raise ConfigError(f"quantize: int8 runs on the CPU only (this model is on {weight.device.type}); "
                              "use quantize: none")
        if "fbgemm" not in torch.backends.quantized.supported_engines:
            raise ConfigError("quantize: int8 needs PyTorch's fbgemm kernels (an x86-64 CPU); use quantize: none")

    def matmul(self, flat: torch.Tensor) -> torch.Tensor:
        out = torch.ops.quantized.linear_dynamic(flat.float(), self.packed, self.REDUCE_RANGE)
        return out.to(flat.dtype)


@functools.cache
def _onednn_has_bf16() -> bool:
    """Whether oneDNN has a bf16 path on this CPU (AVX-512 BW/VL/DQ or AVX-NE-CONVERT); an AVX2-only CPU
    has none, and packing a bf16 weight there raises."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(16, 16, dtype=torch.bfloat16), 16)
    except RuntimeError:  # "bf16 path needs the cpu support ..."
        return False
    return True


@contextlib.contextmanager
def _quantized_engine() -> Iterator[None]:
    """fbgemm for the prepacking (its packed weights then run wherever they are called): on the default
    model's shapes its LM head is 1.4x faster than oneDNN's and the projections are level (AVX2 EPYC)."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


@contextlib.contextmanager
def _quiet_deprecation() -> Iterator[None]:
    """torch 2.13 warns that quantized tensor constructors are deprecated; the packed weight is what we keep."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*deprecated", category=UserWarning)
        yield


def fused_linear(layers: list, quantize: Quantize = "none") -> FusedLinear | None:
    """The fused form of plain `nn.Linear` layers reading the same input; None where none applies (a
    wrapped layer such as a LoRA adapter's, or float weights without a faster kernel)."""
    if not all(type(layer) is torch.nn.Linear for layer in layers):
        return None
    weights = [layer.weight for layer in layers]
    if quantize == "int8":
        DynamicInt8Linear.check_supported(weights[0])
        kernel = DynamicInt8Linear
    elif all(PackedBf16Linear.applies(w) for w in weights):
        kernel = PackedBf16Linear
    else:
        return None
    biases = [layer.bias for layer in layers]
    bias = None if all(b is None for b in biases) else torch.cat(
        [b if b is not None else w.new_zeros(w.shape[0]) for w, b in zip(weights, biases, strict=True)]).detach()
    return kernel(torch.cat(weights).detach(), bias, [w.shape[0] for w in weights])


@dataclass
class LayerProjections:
    """A decoder layer's q/k/v, output and MLP projections: fused where `fused_linear` applies, the layer's
    own modules otherwise."""

    layer: torch.nn.Module
    fused_qkv: FusedLinear | None = None
    fused_output: FusedLinear | None = None
    fused_gate_up: FusedLinear | None = None
    fused_down: FusedLinear | None = None

    @classmethod
    def of(cls, layer, quantize: Quantize = "none") -> LayerProjections:
        """int8 leaves the MLP's down projection in float: it reads SiLU(gate) * up, whose few outlier
        channels per-tensor int8 cannot carry (alone it moved the next-token distribution by KL 0.19 on
        the default model's judge prompts, against 0.008 for gate/up and 0.018 for q/k/v)."""
        attention, mlp = layer.self_attn, layer.mlp
        fusable = all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn"))
        return cls(layer, fused_linear([attention.q_proj, attention.k_proj, attention.v_proj], quantize),
                   fused_linear([attention.o_proj], quantize),
                   fused_linear([mlp.gate_proj, mlp.up_proj], quantize) if fusable else None,
                   fused_linear([mlp.down_proj]) if fusable else None)  # float always

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.fused_qkv is not None:
            return self.fused_qkv(x)
        attention = self.layer.self_attn
        return attention.q_proj(x), attention.k_proj(x), attention.v_proj(x)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused_output(x) if self.fused_output is not None else self.layer.self_attn.o_proj(x)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        mlp = self.layer.mlp
        if self.fused_gate_up is None:
            return mlp(x)
        gate, up = self.fused_gate_up(x)
        inner = mlp.act_fn(gate) * up
        return self.fused_down(inner) if self.fused_down is not None else mlp.down_proj(inner)
