"""Reward-server load test: throughput and latency with and without dynamic batching, on loopback.

Starts `criticrm serve`'s app in this process twice — with dynamic batching (--max-batch-size, default
32) and without it (max_batch_size 1: one request scored at a time) — and, for 1, 8 and 32 concurrent
clients, sends a fixed number of /v1/score requests (distinct items, greedy m = 1: the RLHF setting)
and measures items/s and p50/p99 latency. Bounded: --requests per level, and no new request after
--max-seconds in all (a level cut short reports what it finished).

    python bench/bench_server.py --model runs/demo/train-critic/model --out bench/results/server.json
    python bench/bench_server.py --tiny --requests 32        # smoke run on a tiny random model

Clients run in this process too (threads, sharing the GIL with the server's event loop); on a small
CPU that costs the batched variant some throughput, so the speed-up is a lower bound.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from criticrm.inference.scorer import RewardScorer, ScoringConfig
from criticrm.serve.app import create_app
from criticrm.serve.config import ServerConfig
from criticrm.serve.runner import make_server, serving_in_thread

CONCURRENCY = (1, 8, 32)


def tiny_model(folder: Path) -> Path:
    from criticrm.models.backbone import load_tokenizer
    from criticrm.models.critic_rm import CriticRewardModel
    from criticrm.testing.tiny import make_tiny_backbone

    backbone = make_tiny_backbone(folder / "backbone")
    model = CriticRewardModel.from_backbone(str(backbone), mode="critic")
    return model.save(folder / "model", tokenizer=load_tokenizer(str(backbone)))


def item(index: int, words: int) -> dict:
    filler = " ".join(f"w{(index * 7 + k) % 97}" for k in range(words))
    return {"prompt": f"Question {index}: explain step {index} of the procedure.",
            "response": f"Step {index} works as follows: {filler}."}


def run_level(url: str, concurrency: int, requests: int, items_per_request: int, words: int, first_item: int,
              deadline: float) -> dict:
    """`requests` requests from `concurrency` clients; each request's items are new (no repeated inputs)."""
    counter, lock = itertools.count(), threading.Lock()
    latencies: list[float] = []
    before = httpx.get(f"{url}/v1/info").json()["stats"]

    def client() -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            while True:
                with lock:
                    index = next(counter)
                if index >= requests or time.monotonic() > deadline:
                    return
                start = first_item + index * items_per_request
                body = {"items": [item(start + k, words) for k in range(items_per_request)]}
                sent = time.perf_counter()
                http.post("/v1/score", json=body).raise_for_status()
                elapsed = time.perf_counter() - sent
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    after = httpx.get(f"{url}/v1/info").json()["stats"]
    done = len(latencies)
    batches = after["batches"] - before["batches"]
    ordered = sorted(latencies)
    return {"clients": concurrency, "requests": done, "items": done * items_per_request,
            "seconds": round(seconds, 3),
            "items_per_s": round(done * items_per_request / seconds, 2) if done else None,
            "p50_ms": round(1000 * statistics.median(ordered), 1) if done else None,
            "p99_ms": round(1000 * ordered[min(done - 1, int(0.99 * done))], 1) if done else None,
            "mean_batch_items": round(done * items_per_request / batches, 2) if batches else None,
            "complete": done == requests}


def run_variant(scorer: RewardScorer, config: ServerConfig, args, deadline: float) -> list[dict]:
    """Every variant scores the same items, level by level."""
    levels = []
    with serving_in_thread(make_server(create_app(scorer, config), config, log_level="warning")) as url:
        warm_up = {"items": [item(-1, args.words)]}
        httpx.post(f"{url}/v1/score", json=warm_up, timeout=600).raise_for_status()
        for offset, concurrency in enumerate(CONCURRENCY):
            result = run_level(url, concurrency, args.requests, args.items_per_request, args.words,
                               offset * args.requests * args.items_per_request, deadline)
            print(f"max_batch_size={config.max_batch_size} {result}", flush=True)
            levels.append(result)
    return levels


def markdown(report: dict) -> str:
    rows = ["| clients | batched items/s | p50 ms | p99 ms | mean batch | unbatched items/s | p50 ms "
            "| p99 ms | speed-up |", "|---|---|---|---|---|---|---|---|---|"]
    for batched, single in zip(report["results"]["dynamic"], report["results"]["no_batching"], strict=True):
        speedup = report["speedup"].get(str(batched["clients"]))
        cells = [batched["clients"], batched["items_per_s"], batched["p50_ms"], batched["p99_ms"],
                 batched["mean_batch_items"], single["items_per_s"], single["p50_ms"], single["p99_ms"],
                 f"{speedup:.2f}x" if speedup else "–"]
        rows.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="trained reward-model folder (`criticrm train`'s model/)")
    source.add_argument("--tiny", action="store_true", help="build a tiny random model (a smoke run only)")
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--items-per-request", type=int, default=1,
                        help="responses per request (OpenRLHF sends 1)")
    parser.add_argument("--words", type=int, default=60, help="filler words per response")
    parser.add_argument("--max-batch-size", type=int, default=32, help="the batched variant's max_batch_size")
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--max-new-tokens", type=int, default=128, help="critique length (the tiny model: 8)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="no new request after this, in all")
    parser.add_argument("--out", type=Path, default=Path("bench/results/server.json"))
    args = parser.parse_args()

    deadline = time.monotonic() + args.max_seconds
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp)) if args.tiny else args.model
        max_new_tokens = 8 if args.tiny else args.max_new_tokens
        scorer = RewardScorer.load(model, ScoringConfig(max_new_tokens=max_new_tokens), device=args.device)
        common = dict(port=0, max_wait_ms=args.max_wait_ms, max_queue=4096,
                      request_timeout_s=args.max_seconds + 600)
        results = {}
        for name, batch in (("dynamic", args.max_batch_size), ("no_batching", 1)):
            config = ServerConfig(max_batch_size=batch, **common)
            results[name] = run_variant(scorer, config, args, deadline)
    speedup = {str(b["clients"]): round(b["items_per_s"] / s["items_per_s"], 3)
               for b, s in zip(results["dynamic"], results["no_batching"], strict=True)
               if b["items_per_s"] and s["items_per_s"]}
    report = {
        "about": __doc__.strip().splitlines()[0],
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "workload": {"model": "tiny random (smoke run)" if args.tiny else str(args.model),
                     "mode": scorer.mode,
                     "num_critiques": 1, "temperature": 0.0, "max_new_tokens": max_new_tokens,
                     "requests_per_level": args.requests, "items_per_request": args.items_per_request,
                     "words_per_response": args.words, "max_batch_size": args.max_batch_size,
                     "max_wait_ms": args.max_wait_ms, "max_seconds": args.max_seconds},
        "results": results,
        "speedup": speedup,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
