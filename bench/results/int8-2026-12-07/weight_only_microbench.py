"""Weight-only int8 (`_weight_int8pack_mm`) against `F.linear` on the default model's shapes (BENCHMARKS.md,
int8 section): milliseconds per product and the int8 result's relative error."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

SHAPES = ((576, 960), (576, 3072), (1536, 576), (576, 49152))  # q/k/v, gate/up, down, LM head (in, out)


def milliseconds(product: Callable[[], torch.Tensor], calls: int = 50) -> float:
    for _ in range(5):
        product()
    started = time.perf_counter()
    for _ in range(calls):
        product()
    return (time.perf_counter() - started) / calls * 1e3


def main() -> None:
    torch.manual_seed(0)
    for rows in (64, 128):
        for in_features, out_features in SHAPES:
            weight = torch.randn(out_features, in_features)
            scales = weight.abs().amax(1) / 127
            quantized = (weight / scales[:, None]).round().clamp(-127, 127).to(torch.int8)
            for dtype in (torch.bfloat16, torch.float32):
                x, float_weight, typed_scales = torch.randn(rows, in_features, dtype=dtype), weight.to(dtype), scales.to(dtype)
                exact = x.float() @ weight.T
                int8_ms = milliseconds(lambda x=x, q=quantized, s=typed_scales: torch.ops.aten._weight_int8pack_mm(x, q, s))
                error = (torch.ops.aten._weight_int8pack_mm(x, quantized, typed_scales).float() - exact).norm() / exact.norm()
                float_ms = milliseconds(lambda x=x, w=float_weight: torch.nn.functional.linear(x, w))
                print(rows, in_features, out_features, dtype,
                      f"woq {int8_ms:.3f} ms  float {float_ms:.3f} ms  relerr {error.item():.5f}")


if __name__ == "__main__":
    main()
