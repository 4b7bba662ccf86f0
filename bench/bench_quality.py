"""Reward-model quality on ../shared/data/dev_sections.jsonl: issue 5's comparison table and ablations.

Every model is the default backbone trained on the same pairs: those of the pipeline run of
`configs/bench_train300.yaml` (run folder `runs/train300`), which this script runs first through the
library recipe `criticrm.pipeline.run_pipeline` (finished stages are skipped). Each entry is one
evaluation into OUT/<entry>/; an ablation first builds its own training data and model with the same
library stages and the same config, changing one setting. Every step resumes where it stopped, so the
script can be run again after an interruption (or with more entries) at no loss.

    python bench/bench_quality.py --per-subset 8                      # every entry
    python bench/bench_quality.py --per-subset 8 --entries critic-m1 standard
    python bench/bench_quality.py --entries                          # only rewrite the table (quality.md)

Entries:
- judge-pointwise / judge-pairwise: the base model as an LLM judge (one greedy sample per response or
  order; the pairwise judge is asked in both orders);
- judge-pairwise-prob: the same pairwise run read with score policy `probability` (each order votes
  P(chosen's letter) / (P(A) + P(B)) instead of its written verdict), re-read from the stored run by
  `judges.revote_pairwise` with no generation: identical to judging again with that policy;
- standard / critic-m1 / critic-m4: the pipeline's standard RM and Critic-RM (m = 1 greedy; m = 4
  sampled at T = 0.8, which also gives the m = 1, 2 sampled points of the m-scaling curve);
- lambda-constant / lambda-reverse: Critic-RM trained with lambda fixed at 0.5 (the mean of the default
  cosine 0.9 -> 0.1, so only the schedule's shape differs) or rising 0.1 -> 0.9;
- no-filter: no consistency filtering (filter `keep_all`), then the run's refinement;
- refine-none / refine-summarize: the run's filtered critiques with another refinement strategy;
- critic-seed1/2, standard-seed1/2: the pipeline's Critic-RM and standard RM trained again with another
  `seed` (head initialisation, batch order and which pairs are held out change; the critique data does
  not): the run-to-run spread every other difference has to be read against.

`--per-subset K` evaluates the first K pairs of every subset (a stratified sample; the file has 28
subsets), so sections are estimated from every subset at a fraction of the cost. Results: OUT/quality.json
(one record per entry, merged across runs) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from criticrm import rundir
from criticrm.data.readers import DataConfig
from criticrm.data.rewardbench import EvalExample, load_eval_examples
from criticrm.evaluation.eval_report import load_examples, write_eval_report
from criticrm.evaluation.judges import position_summary, revote_pairwise
from criticrm.evaluation.paired import paired_bootstrap
from criticrm.evaluation.run import EvalConfig, run_evaluation
from criticrm.generation.base import SamplingConfig
from criticrm.inference.scorer import ScoringConfig
from criticrm.models.backbone import ModelConfig
from criticrm.pipeline import PipelineConfig, run_pipeline
from criticrm.pipeline.critique import CritiqueConfig
from criticrm.pipeline.stages import LazyGenerator, filter_stage, refine_stage, stage_report
from criticrm.training.config import effective_train_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SEEDS = (1, 2)  # extra training seeds of the two main models (the config's own seed is the first run)
SEED_GROUPS = {"Critic-RM, m=1": ("critic-m1", "critic-seed1", "critic-seed2"),
               "standard RM": ("standard", "standard-seed1", "standard-seed2")}


@dataclass
class Entry:
    name: str
    label: str
    judge: str | None = None  # evaluate the base model as this LLM judge ...
    model_dir: str | None = None  # ... or this trained reward-model folder
    num_critiques: int = 1  # critiques per response (m) of a Critic-RM
    prepare: Callable[[], None] | None = None  # builds model_dir (an ablation's data and model)
    # (stored pairwise-judge entry, verdict source): re-read that entry's run instead of evaluating
    revote_of: tuple[str, str] | None = None


def entries(config: PipelineConfig, work: Path) -> list[Entry]:
    """The table's rows, in order; every path derives from the pipeline run and the ablations folder."""
    run_dir = Path(config.run.run_dir)
    critic, standard = (run_dir / rundir.train_dir(mode) / rundir.MODEL_DIR for mode in ("critic", "standard"))
    generator = LazyGenerator.of(config.critique, config.model)

    def ablation(name: str, label: str, data: Path, steps: Callable[[], None] | None = None, **train) -> Entry:
        out = work / name / "train"

        def prepare() -> None:
            if steps:
                steps()
            _train(config, data, out, **train)

        return Entry(name, label, model_dir=str(out / rundir.MODEL_DIR), prepare=prepare)

    def refined(filter_dir: Path, folder: Path, **changes) -> Callable[[], None]:
        def step() -> None:
            refine_stage(filter_dir, dataclasses.replace(config.refine, **changes), generator, folder / "refine")
            stage_report(folder / "refine", filter_dir, folder / "refine")
        return step

    def unfiltered() -> None:
        folder = work / "no-filter"
        filter_stage(run_dir / rundir.CRITIQUES_DIR, dataclasses.replace(config.filter, keep_all=True),
                     folder / "filter")
        stage_report(folder / "filter", folder / "filter")
        refined(folder / "filter", folder)()

    def reseeded(mode: str, label: str, seed: int) -> Entry:
        return ablation(f"{mode}-seed{seed}", f"{label}, seed {seed}", run_dir / rundir.REFINE_DIR, mode=mode, seed=seed)

    run_filter = run_dir / rundir.FILTER_DIR
    return [
        Entry("judge-pointwise", "judge, pointwise", judge="pointwise"),
        Entry("judge-pairwise", "judge, pairwise", judge="pairwise"),
        Entry("judge-pairwise-prob", "judge, pairwise (probability)", revote_of=("judge-pairwise", "probability")),
        Entry("standard", "standard RM", model_dir=str(standard)),
        Entry("critic-m1", "Critic-RM, m=1", model_dir=str(critic)),
        Entry("critic-m4", "Critic-RM, m=4", model_dir=str(critic), num_critiques=4),
        ablation("lambda-constant", "λ constant 0.5", run_dir / rundir.REFINE_DIR, lambda_schedule="constant",
                 lambda_start=0.5),
        ablation("lambda-reverse", "λ reverse 0.1→0.9", run_dir / rundir.REFINE_DIR, lambda_schedule="reverse"),
        ablation("no-filter", "no filtering", work / "no-filter" / "refine", unfiltered),
        ablation("refine-none", "refine: none", work / "refine-none" / "refine",
                 refined(run_filter, work / "refine-none", strategy="none")),
        ablation("refine-summarize", "refine: summarize", work / "refine-summarize" / "refine",
                 refined(run_filter, work / "refine-summarize", strategy="summarize")),
        *(reseeded(mode, label, seed) for mode, label in (("critic", "Critic-RM, m=1"), ("standard", "standard RM"))
          for seed in SEEDS),
    ]


def _train(config: PipelineConfig, data: Path, out: Path, **changes) -> None:
    """A reward model trained on `data` into `out` with the run's settings and `changes` (resumes `out`)."""
    from criticrm.training.trainer import train_reward_model

    settings = effective_train_config(dataclasses.replace(config.train, **changes), config.model)
    train_reward_model(settings, data, out, model_name=config.model.model, use_cpu=config.model.device == "cpu")
    gc.collect()  # the next ablation trains another model in this process


def evaluate(entry: Entry, examples: list[EvalExample], data_name: str, report_dir: Path) -> None:
    """One evaluation: the base model as a judge (one greedy sample per response or order), or a trained model."""
    if entry.judge:
        config, model, sampling = EvalConfig(judge=entry.judge), ModelConfig(), SamplingConfig(num_critiques=1,
                                                                                               temperature=0.0)
    else:
        config, model, sampling = EvalConfig(name=entry.label), ModelConfig(model=entry.model_dir), SamplingConfig()
    run_evaluation(examples, config, model, ScoringConfig(num_critiques=entry.num_critiques), CritiqueConfig(),
                   sampling, report_dir, data_name=data_name)
    gc.collect()


def revote(source: Path, report_dir: Path, name: str, verdict_source: str) -> None:
    """A report of the pairwise judge run in `source` read under another verdict source (no generation);
    its meta is the source run's (wall time included: that run produced it) plus what was re-read."""
    report = json.loads((source / rundir.REPORT_JSON).read_text())
    results = revote_pairwise(load_examples(source), verdict_source)
    meta = report["meta"] | {"score": verdict_source, "revote_of": str(source / rundir.REPORT_JSON),
                             "position": position_summary(results)}
    write_eval_report(name, results, report_dir, meta)


def record(entry: Entry, report_dir: Path, prepare_seconds: float) -> dict:
    report = json.loads((report_dir / rundir.REPORT_JSON).read_text())
    summary, meta = report["summary"], report["meta"]
    row = {"entry": entry.name, "label": entry.label, "model": entry.model_dir or meta.get("model"),
           "examples": summary["n"], "overall": summary["overall"], "accuracy": summary["accuracy"],
           "sections": summary["sections"],
           "ties": summary.get("ties"), "invalid": summary.get("invalid"), "eval_seconds": meta["seconds"],
           **_bias_and_calibration(summary), "report": _stored_path(report_dir / rundir.REPORT_JSON)}
    training = training_record(row["model"])
    if training:
        row["training"] = training
    if summary.get("m_scaling"):
        row["m_scaling"] = summary["m_scaling"]
    if meta.get("position"):
        row["position"] = meta["position"]
    if entry.prepare:
        row["prepare_seconds_this_run"] = round(prepare_seconds, 1)
    return row


def _bias_and_calibration(summary: dict) -> dict:
    return {"length_bias": summary.get("length_bias"), "ece": (summary.get("calibration") or {}).get("ece")}


def training_record(model_dir: str | None) -> dict | None:
    """What the training of a reward-model folder recorded (its `train_summary.json`, beside `model/`):
    steps, tokens, time, precision, λ, and the held-out accuracy; None for a judge or a missing folder."""
    summary_file = Path(model_dir).parent / rundir.TRAIN_SUMMARY_FILE if model_dir else None
    if summary_file is None or not summary_file.is_file():
        return None
    summary = json.loads(summary_file.read_text())
    return {key: summary.get(key) for key in ("mode", "steps", "trained_tokens", "train_seconds", "precision",
                                              "lambda_schedule")} | {
        "held_out_accuracy": summary.get("final_metrics", {}).get("eval_accuracy"),
        "held_out_pairs": summary.get("final_metrics", {}).get("eval_pairs"),
        "seed": summary.get("config", {}).get("seed")}


def details(rows: list[dict]) -> str:
    """What the overall score hides: plain accuracy, ties, length bias, calibration, held-out accuracy
    on the training distribution, and what each row cost."""
    lines = ["| model | accuracy, all pairs | ties | chosen shorter | chosen longer | ECE | held-out acc. "
             "(train pairs) | training | eval |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        bias, training = row.get("length_bias") or {}, row.get("training") or {}
        held_out = (f"{_percent(training['held_out_accuracy'])} ({training['held_out_pairs']})"
                    if training.get("held_out_accuracy") is not None else "–")
        trained = (f"{training['steps']} steps, {training['trained_tokens']:,} tok, {training['train_seconds'] / 60:.0f} min"
                   if training.get("train_seconds") else "–")
        ece = "–" if row.get("ece") is None else f"{row['ece']:.3f}"
        lines.append(f"| {row['label']} | {_percent(row['accuracy'])} | {row.get('ties') or 0} | "
                     f"{_side(bias.get('chosen_shorter'))} | {_side(bias.get('chosen_longer'))} | {ece} | {held_out} | "
                     f"{trained} | {row['eval_seconds'] / 60:.0f} min |")
    return "\n".join(lines)


def _side(bias: dict | None) -> str:
    return "–" if not bias else f"{_percent(bias['accuracy'])} ({bias['n']})"


def markdown(rows: list[dict], references: tuple[str, ...] = ("standard", "critic-m1")) -> str:
    """The table; each row also gets its overall difference from every `references` entry with a 95% paired,
    subset-stratified bootstrap interval (on a few hundred pairs a few points can be noise). The standard
    RM is the method's baseline; Critic-RM m = 1 is what every ablation changes one setting of."""
    sections = sorted({name for row in rows for name in row["sections"]})
    bases = [row for name in references for row in rows if row["entry"] == name]
    head = ("| model | " + " | ".join(sections) + " | overall | "
            + "".join(f"Δ vs {base['label']} | " for base in bases) + "pairs |")
    lines = [head, "|" + "---|" * (len(sections) + len(bases) + 3)]
    for row in rows:
        cells = [_percent(row["sections"].get(name)) for name in sections]
        differences = "".join(f"{_difference(base, row)} | " for base in bases)
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | **{_percent(row['overall'])}** | "
                     f"{differences}{row['examples']} |")
    return "\n".join(lines)


def _difference(base: dict, row: dict) -> str:
    if base is row:
        return "–"
    paired = paired_bootstrap(_report_examples(base), _report_examples(row))
    return f"{100 * paired.difference:+.1f} [{100 * paired.low:+.1f}, {100 * paired.high:+.1f}]"


def seed_spread(entries: dict[str, dict]) -> str:
    """Mean, standard deviation and range of the overall score over the seeds of each main model, and the
    Critic-RM's lead over the standard RM per seed (seed i against seed i): how far a one-seed difference
    can move by chance. Empty until every seed of a group is stored."""
    groups = {label: [entries[name] for name in names] for label, names in SEED_GROUPS.items()
              if all(name in entries for name in names)}
    if not groups:
        return ""
    lines = ["| model | seeds | overall per seed | mean | std | range |", "|---|---|---|---|---|---|"]
    for label, rows in groups.items():
        scores = [100 * row["overall"] for row in rows]
        lines.append(f"| {label} | {len(scores)} | {', '.join(f'{v:.1f}' for v in scores)} | {statistics.mean(scores):.1f} "
                     f"| {statistics.stdev(scores):.1f} | {max(scores) - min(scores):.1f} |")
    if len(groups) == len(SEED_GROUPS):
        critic, standard = (groups[label] for label in SEED_GROUPS)
        leads = [_difference(base, row) for base, row in zip(standard, critic, strict=True)]
        lines.append(f"\nCritic-RM minus standard RM, seed by seed [95% paired CI]: {'; '.join(leads)}")
    return "\n".join(lines)


def _stored_path(path: Path) -> str:
    """Report paths are stored relative to the repository, so results stay readable from another checkout."""
    return str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


def _report_examples(row: dict):
    return load_examples(ROOT / row["report"])  # an absolute stored path stays absolute under `/`


def _percent(value) -> str:
    if isinstance(value, dict):
        value = value.get("score", value.get("accuracy"))
    return "–" if value is None else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "bench_train300.yaml",
                        help="the pipeline config: its run trains the main models, ablations train with its settings")
    parser.add_argument("--run-dir", type=Path, default=None, help="the pipeline's run folder (default: the config's)")
    parser.add_argument("--data", type=Path, default=SHARED / "dev_sections.jsonl")
    parser.add_argument("--per-subset", type=int, default=None, help="evaluate the first K pairs of each subset")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "quality-ablations",
                        help="where ablations keep their data and models")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality")
    parser.add_argument("--entries", nargs="*", default=None,
                        help="run only these entries (default: all; none: only rewrite the table of stored results)")
    args = parser.parse_args()

    config = PipelineConfig.from_yaml(args.config)
    if args.run_dir:
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, run_dir=str(args.run_dir)))
    table = entries(config, args.work)
    unknown = set(args.entries or []) - {entry.name for entry in table}
    if unknown:
        parser.error(f"unknown entries {sorted(unknown)}; known: {', '.join(e.name for e in table)}")
    selected = [entry for entry in table if args.entries is None or entry.name in args.entries]
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "quality.json"
    stored = json.loads(results_path.read_text()) if results_path.exists() else {"entries": {}}
    if selected:
        run_pipeline(config)  # the main models and the critiques every ablation starts from
        examples = load_eval_examples(DataConfig(data=str(args.data), per_subset=args.per_subset))
    for entry in selected:
        print(f"[{entry.name}] {entry.label}", flush=True)
        started = time.perf_counter()
        if entry.prepare:
            entry.prepare()
        prepare_seconds = time.perf_counter() - started
        report_dir = args.out / entry.name
        if entry.revote_of:
            source, verdict_source = entry.revote_of
            revote(args.out / source, report_dir, entry.label, verdict_source)
        else:
            evaluate(entry, examples, str(args.data), report_dir)
        stored["entries"][entry.name] = record(entry, report_dir, prepare_seconds)
        stored |= {"data": str(args.data), "per_subset": args.per_subset, "run_dir": config.run.run_dir,
                   "updated": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        results_path.write_text(json.dumps(stored, indent=2, ensure_ascii=False))
        print(f"  overall {_percent(stored['entries'][entry.name]['overall'])} "
              f"on {stored['entries'][entry.name]['examples']} pairs", flush=True)
    order = [entry.name for entry in table]
    rows = [stored["entries"][name] for name in order if name in stored["entries"]]
    for row in rows:  # rows recorded before these fields existed get them while their files are still here
        report_file = ROOT / row["report"]
        if "length_bias" not in row and report_file.is_file():
            row |= _bias_and_calibration(json.loads(report_file.read_text())["summary"])
        if "training" not in row and (training := training_record(row["model"])):
            row["training"] = training
    results_path.write_text(json.dumps(stored, indent=2, ensure_ascii=False))
    text = markdown(rows) + "\n\n" + details(rows)
    spread = seed_spread(stored["entries"])
    if spread:
        text += "\n\nSeed spread (overall):\n\n" + spread
    (args.out / "quality.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
