"""The standard RM's training budget, tuned where it may be: on ../shared/data/dev.jsonl (in-distribution).

The quality protocol reports on dev_sections.jsonl, and a setting chosen there would be fit to the very
pairs that judge it. So the training budget — pairs, epochs, learning rates, the reward head's start —
is chosen here instead: every variant is the standard RM of the protocol config (`configs/bench_protocol.yaml`
by default) with some settings changed, trained on the first `pairs` pairs of the config's training file
and evaluated on all of dev.jsonl (439 pairs of the training sources, disjoint prompts). The table gives
each variant's accuracy, its length-controlled accuracy (dev.jsonl has a length bias of its own) and its
difference from the protocol's own setting with a 95% paired interval.

    python bench/bench_budget.py                                  # every variant in VARIANTS
    python bench/bench_budget.py --variants standard head-tied    # some of them
    python bench/bench_budget.py --variants                       # only rewrite the table
    python bench/bench_budget.py --variants standard head-tied --seeds 2   # each over training seeds

One training seed moves this model by ~10 points on dev.jsonl (BENCHMARKS.md), more than any setting
tried so far: compare variants over `--seeds` (seed +K trains with the config's training seed + K, in
`<variant>-seedK`, the folder bench_quality.py's `standard-seedK` also uses).

Models live in `<run_dir>-bench/<variant>/train` — the work folder of bench_quality.py, so the protocol's
own standard RM (variant `standard`) is trained once for both scripts. Every step resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from bench_quality import (
    ROOT,
    SHARED,
    TRL_HEAD,
    Entry,
    _seed_label,
    _train,
    details,
    evaluate,
    markdown,
    pairs_file,
    record,
    seed_suffix,
    seeded,
)
from criticrm import rundir
from criticrm.data.readers import DataConfig
from criticrm.data.rewardbench import load_eval_examples
from criticrm.pipeline import PipelineConfig

# name -> (label, pairs or None for the config's, the train settings changed). Why each is here:
VARIANTS: dict[str, tuple[str, int | None, dict]] = {
    # the protocol's setting: backbone lr 2e-5; the head at 1e-3 (50x) from a 1e-3 initialisation
    "standard": ("protocol setting (head lr 1e-3, init 1e-3)", None, {}),
    # the head trained as TRL's score layer (bench_quality.TRL_HEAD): is our 50x head what separates us from it?
    "head-tied": ("head lr = backbone lr, init 0.02 (TRL's)", None, TRL_HEAD),
    # twice the data at the protocol's setting: does the data size, not the setting, limit it?
    "pairs-2000": ("2,000 pairs", 2000, {}),
    # two passes over the protocol's pairs
    "epochs-2": ("2 epochs", None, {"epochs": 2.0}),
    # the same one pass at a 2.5x higher backbone learning rate: after one epoch at 2e-5 the reward loss of
    # both models is still near ln 2, so the backbone may simply move too little in 113 steps
    "lr-5e-5": ("backbone lr 5e-5", None, {"learning_rate": 5e-5}),
}


def variant_pairs(config: PipelineConfig, work: Path, pairs: int | None) -> Path:
    """The first `pairs` pairs of the config's training data as a plain preference file (the config's own
    limit when None: the very file the protocol's standard RM trains on)."""
    if pairs is None:
        return pairs_file(config, work)
    sized = dataclasses.replace(config, data=dataclasses.replace(config.data, limit=pairs))
    return pairs_file(sized, work / f"pairs-{pairs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "bench_protocol.yaml")
    parser.add_argument("--data", type=Path, default=SHARED / "dev.jsonl",
                        help="the in-distribution evaluation file (never dev_sections: the protocol reports there)")
    parser.add_argument("--work", type=Path, default=None, help="models and pair files (default: <run_dir>-bench)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "budget")
    parser.add_argument("--variants", nargs="*", default=None, choices=list(VARIANTS),
                        help="train and evaluate only these (default: all; none: only rewrite the table)")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds of each variant (seed +0 .. +N-1)")
    args = parser.parse_args()

    config = PipelineConfig.from_yaml(args.config)
    work = args.work or Path(f"{config.run.run_dir}-bench")
    selected = list(VARIANTS) if args.variants is None else args.variants
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "budget.json"
    stored = json.loads(results_path.read_text()) if results_path.exists() else {"entries": {}}
    examples = load_eval_examples(DataConfig(data=str(args.data))) if selected else []
    for variant, k in ((variant, k) for variant in selected for k in range(args.seeds)):
        label, pairs, changes = VARIANTS[variant]
        name, label = f"{variant}{seed_suffix(k)}", f"{label}{_seed_label(k)}"
        out = work / name / "train"
        entry = Entry(name, label, model_dir=str(out / rundir.MODEL_DIR))
        print(f"[{name}] {label}", flush=True)
        started = time.perf_counter()
        _train(seeded(config, k), variant_pairs(config, work, pairs), out, mode="standard", **changes)
        report_dir = args.out / name
        if not (report_dir / rundir.REPORT_JSON).is_file():
            evaluate(entry, examples, str(args.data), report_dir)
        stored["entries"][name] = record(entry, report_dir, time.perf_counter() - started) | {
            "variant": variant, "seed_offset": k, "pairs": pairs or config.data.limit, "changes": changes}
        stored |= {"data": str(args.data), "config": str(args.config), "updated": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        results_path.write_text(json.dumps(stored, indent=2, ensure_ascii=False))
        print(f"  {100 * stored['entries'][name]['overall']:.1f} on {stored['entries'][name]['examples']} pairs",
              flush=True)
    order = list(VARIANTS)
    rows = sorted(stored["entries"].values(), key=lambda row: (order.index(row.get("variant", row["entry"])),
                                                              row.get("seed_offset", 0)))
    text = markdown(rows, references=("standard",)) + "\n\n" + details(rows)
    (args.out / "budget.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
