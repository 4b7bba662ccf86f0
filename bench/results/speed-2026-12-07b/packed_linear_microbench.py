"""oneDNN's prepacked bf16 weight against F.linear on the default model's projection shapes (BENCHMARKS.md)."""

import time

import torch


def timed(f, reps=100):
    for _ in range(5):
        f()
    start = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - start) / reps * 1e3


for K, N in ((576, 1728), (576, 3072), (1536, 576)):
    w = torch.randn(N, K, dtype=torch.bfloat16)
    packed = torch.ops.mkldnn._reorder_linear_weight(w, 32)
    for M in (32, 64, 96, 128, 256, 512, 1024):
        x = torch.randn(M, K, dtype=torch.bfloat16)
        a = timed(lambda x=x, packed=packed: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], ""))
        b = timed(lambda x=x, w=w: torch.nn.functional.linear(x, w))
        print(K, N, M, f"packed {a:.3f} plain {b:.3f} ms")
