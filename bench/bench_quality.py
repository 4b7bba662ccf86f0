"""Reward-model quality on ../shared/data/dev_sections.jsonl: the comparison table, its ablations, and the
powered protocol (issue 16: whole-pipeline seeds, length rules, TRL's RewardTrainer, length control).

Every model is the default backbone trained on the same pairs: those of the pipeline run of
`configs/bench_train300.yaml` (run folder `runs/train300`), which this script runs first through the
library recipe `criticrm.pipeline.run_pipeline` (finished stages are skipped). Each entry is one
evaluation into OUT/<entry>/; an ablation first builds its own training data and model with the same
library stages and the same config, changing one setting. Every step resumes where it stopped, so the
script can be run again after an interruption (or with more entries) at no loss.

    python bench/bench_quality.py --per-subset 8                      # every entry
    python bench/bench_quality.py --per-subset 8 --entries critic-m1 standard
    python bench/bench_quality.py --entries                          # only rewrite the table (quality.md)
    python bench/bench_quality.py --config configs/bench_protocol.yaml --seeds 3 --out bench/results/protocol
                                                                     # the powered protocol

Entries:
- rule-longer / rule-shorter: "the longer (shorter) response wins" — no model; any score a length rule can
  reach is a length artifact, and the length-controlled column scores both rules 50%;
- judge-pointwise / judge-pairwise: the base model as an LLM judge (one greedy sample per response or
  order; the pairwise judge is asked in both orders);
- judge-pairwise-prob: the same pairwise run read with score policy `probability` (each order votes
  P(chosen's letter) / (P(A) + P(B)) instead of its written verdict), re-read from the stored run by
  `judges.revote_pairwise` with no generation: identical to judging again with that policy;
- standard / critic-m1 / critic-m4: the pipeline's standard RM and Critic-RM (m = 1 greedy; m = 4
  sampled at T = 0.8, which also gives the m = 1, 2 sampled points of the m-scaling curve);
- critic-m1-sampled: the same Critic-RM at m = 1 with one critique sampled at T = 0.8 (the distribution its
  reward head was trained to read) instead of the greedy one; compare it with critic-m1 on dev.jsonl;
- lambda-constant / lambda-reverse: Critic-RM trained with lambda fixed at 0.5 (the mean of the default
  cosine 0.9 -> 0.1, so only the schedule's shape differs) or rising 0.1 -> 0.9;
- no-filter: no consistency filtering (filter `keep_all`), then the run's refinement;
- reward-unselected: no pair passes the filter, so none carries critique supervision and the reward reads
  the sampled critiques as they came (one random chosen/rejected pair of them per pair and epoch,
  `random-k` 1). In the paper's recipe half the pairs bring only critiques selected because they agree
  with the human label, and at inference the model's own critiques are not so selected: this row asks
  whether the reward learnt to trust a critique more than the critiques it will read deserve. Read it
  as a first probe: it also trains no critique and makes one comparison per pair and epoch where the
  run's matched pairing makes up to four (less reward signal, the same number of steps);
- reward-sampled: the clean test of that question (`train.reward_critiques: sampled`): the same filter and
  refinement, the critique loss on the refined critiques as in the paper, but the reward reads every
  critique sampled for a pair (matched pairing, as the run), never the ones selected for agreeing with the label;
- refine-none / refine-summarize: the run's filtered critiques with another refinement strategy;
- standard (and standard-seedK): the standard RM, trained on the config's pairs themselves (it needs no
  critiques: the same pairs, split and settings the Critic-RM gets, with the run's seed);
- trl-standard: the same standard RM trained by TRL's `RewardTrainer` on the same pairs and budget
  (`bench/trl_reference.py`; needs `pip install trl`): is our baseline as good as the field's?
- standard-head-tied: our standard RM with its reward head trained as TRL's score layer (`TRL_HEAD`): where
  ours and TRL's differ, is the head the reason? (Its model is bench_budget.py's `head-tied`, one folder.)
- critic-m1-seedK, standard-seedK (K = 1 .. --seeds - 1): the whole pipeline again with seed +K — its
  critiques are sampled with another seed and both models are trained with another seed (head
  initialisation, batch order, held-out pairs) — in the run folder `<run_dir>-seedK`: the run-to-run
  spread every difference has to be read against. trl-standard-seedK: TRL's model with training seed +K,
  so the external reference is read against its own spread too.

`--per-subset K` evaluates the first K pairs of every subset (a stratified sample; the file has 28
subsets), so sections are estimated from every subset at a fraction of the cost. Results: OUT/quality.json
(one record per entry, merged across runs) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from criticrm import rundir
from criticrm.data.jsonl import write_jsonl
from criticrm.data.readers import DataConfig
from criticrm.data.rewardbench import EvalExample, load_eval_examples
from criticrm.evaluation.eval_report import load_examples, write_eval_report
from criticrm.evaluation.judges import position_summary, revote_pairwise
from criticrm.evaluation.metrics import ExampleResult
from criticrm.evaluation.paired import paired_bootstrap
from criticrm.evaluation.run import EvalConfig, run_evaluation
from criticrm.generation.base import SamplingConfig
from criticrm.inference.scorer import ScoringConfig
from criticrm.models.backbone import ModelConfig
from criticrm.pipeline import PipelineConfig, run_pipeline
from criticrm.pipeline.critique import CritiqueConfig
from criticrm.pipeline.stages import LazyGenerator, filter_stage, read_pairs, refine_stage, stage_report
from criticrm.training.config import effective_train_config
from trl_reference import DONE_FILE as TRL_DONE_FILE

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MAIN_MODELS = {"critic-m1": "Critic-RM, m=1", "standard": "standard RM"}  # the rows compared seed by seed
# rows whose seeds are summarised too (mean, min-max), beside the main models
SEEDED_MODELS = {**MAIN_MODELS, "trl-standard": "standard RM (TRL RewardTrainer)"}
# The reward head as TRL's RewardTrainer trains its score layer: the backbone's learning rate, and the
# model's own initialisation (std = initializer_range, 0.02 for the default backbone). Our configs give
# the head 50x the backbone's rate from a 1e-3 start; this setting tests whether that is what separates
# our standard RM from TRL's on the same pairs.
TRL_HEAD = {"head_learning_rate": None, "head_init_std": 0.02}


@dataclass
class Entry:
    name: str
    label: str
    judge: str | None = None  # evaluate the base model as this LLM judge ...
    model_dir: str | None = None  # ... or this trained reward-model folder ...
    # ... or score the examples with this (examples, report folder, data name) -> None (rules, TRL)
    custom: Callable[[list[EvalExample], Path, str], None] | None = None
    num_critiques: int = 1  # critiques per response (m) of a Critic-RM
    temperature: float | None = None  # its critique sampling temperature (None: greedy at m = 1, else 0.8)
    prepare: Callable[[], None] | None = None  # builds model_dir (an ablation's data and model)
    # (stored pairwise-judge entry, verdict source): re-read that entry's run instead of evaluating
    revote_of: tuple[str, str] | None = None


def seeded(config: PipelineConfig, k: int) -> PipelineConfig:
    """Seed +k of the whole pipeline: critique sampling and training reseeded, in `<run_dir>-seedK`."""
    if k == 0:
        return config
    return dataclasses.replace(
        config, run=dataclasses.replace(config.run, run_dir=f"{config.run.run_dir}-seed{k}"),
        sampling=dataclasses.replace(config.sampling, seed=config.sampling.seed + k),
        train=dataclasses.replace(config.train, seed=config.train.seed + k))


def seed_suffix(k: int) -> str:
    return f"-seed{k}" if k else ""


def entries(config: PipelineConfig, work: Path, seeds: int = 1) -> list[Entry]:
    """The table's rows, in order; every path derives from the pipeline runs and the work folder."""
    run_dir = Path(config.run.run_dir)
    critic = run_dir / rundir.train_dir("critic") / rundir.MODEL_DIR
    generator = LazyGenerator.of(config.critique, config.model)
    finished_runs: set[str] = set()

    def main_run(k: int = 0) -> None:
        """The pipeline run of seed k (its finished stages are skipped), once per process: only the entries
        that need its critiques or models start it, so the cheap rows never wait for critique generation."""
        run = seeded(config, k)
        if run.run.run_dir not in finished_runs:
            run_pipeline(run)
            finished_runs.add(run.run.run_dir)

    def ablation(name: str, label: str, data: Path, steps: Callable[[], None] | None = None, **train) -> Entry:
        out = work / name / "train"

        def prepare() -> None:
            main_run()
            if steps:
                steps()
            _train(config, data, out, **train)

        return Entry(name, label, model_dir=str(out / rundir.MODEL_DIR), prepare=prepare)

    def refined(filter_dir: Path, folder: Path, **changes) -> Callable[[], None]:
        def step() -> None:
            refine_stage(filter_dir, dataclasses.replace(config.refine, **changes), generator, folder / "refine")
            stage_report(folder / "refine", filter_dir, folder / "refine")
        return step

    def refiltered(name: str, expect_none_passing: bool = False, **changes) -> None:
        """The run's critiques filtered again into `work/name` (with `changes` to the run's filter settings),
        then refined there. A refine folder that already holds the same refinement's answers reuses them."""
        folder = work / name
        stats = filter_stage(run_dir / rundir.CRITIQUES_DIR, dataclasses.replace(config.filter, **changes),
                             folder / "filter")
        if expect_none_passing and stats["passed"]:
            raise RuntimeError(f"{stats['passed']} pairs passed a filter meant to pass none: scores beyond 1-10?")
        stage_report(folder / "filter", folder / "filter")
        refined(folder / "filter", folder)()

    def unfiltered() -> None:
        refiltered("no-filter", keep_all=True)

    def unselected() -> None:
        """Every pair reward-only, with all its sampled critiques: a pair would pass the instance filter only
        if its chosen critiques outscored its rejected ones by more than the 1-10 scale allows."""
        refiltered("reward-unselected", expect_none_passing=True, instance_margin=10.0, failed_pairs="reward-only")

    def sampled_reward() -> None:
        """The run's own filter and refinement, written again so that its rows carry the sampled critiques."""
        refiltered("reward-sampled")

    def standard(k: int) -> Entry:
        """The standard RM of seed k, trained on the config's pairs (written once into the work folder)."""
        out = work / f"standard{seed_suffix(k)}" / "train"
        return Entry(f"standard{seed_suffix(k)}", f"standard RM{_seed_label(k)}", model_dir=str(out / rundir.MODEL_DIR),
                     prepare=lambda: _train(seeded(config, k), pairs_file(config, work), out, mode="standard"))

    def standard_head_tied() -> Entry:
        out = work / "head-tied" / "train"
        return Entry("standard-head-tied", "standard RM, head as TRL's", model_dir=str(out / rundir.MODEL_DIR),
                     prepare=lambda: _train(config, pairs_file(config, work), out, mode="standard", **TRL_HEAD))

    def critic_of_seed(k: int) -> Entry:
        model = Path(seeded(config, k).run.run_dir) / rundir.train_dir("critic") / rundir.MODEL_DIR
        return Entry(f"critic-m1{seed_suffix(k)}", f"Critic-RM, m=1{_seed_label(k)}", model_dir=str(model),
                     prepare=lambda: main_run(k))

    def trl_reference(k: int = 0) -> Entry:
        """TRL's RewardTrainer on the same pairs, with training seed + k (its own folder per seed)."""
        out = work / f"trl-standard{seed_suffix(k)}"

        def score(examples: list[EvalExample], report_dir: Path, data_name: str) -> None:
            from trl_reference import score_trl, train_trl

            train = seeded(config, k).train
            settings = effective_train_config(dataclasses.replace(train, mode="standard"), config.model)
            with rundir.working(out):
                model_dir = train_trl(pairs_file(config, work), out, settings, config.model.model)
            started = time.perf_counter()
            with rundir.working(report_dir):
                results = score_trl(model_dir, examples)
            write_eval_report("TRL RewardTrainer", results, report_dir,
                              {"model": str(model_dir), "data": data_name, "kind": "trl-reward-trainer",
                               "seconds": round(time.perf_counter() - started, 1)})

        return Entry(f"trl-standard{seed_suffix(k)}", f"standard RM (TRL RewardTrainer){_seed_label(k)}", custom=score)

    run_filter = run_dir / rundir.FILTER_DIR
    return [
        Entry("rule-longer", "rule: longer response wins", custom=length_rule(longer=True)),
        Entry("rule-shorter", "rule: shorter response wins", custom=length_rule(longer=False)),
        Entry("judge-pointwise", "judge, pointwise", judge="pointwise"),
        Entry("judge-pairwise", "judge, pairwise", judge="pairwise"),
        Entry("judge-pairwise-prob", "judge, pairwise (probability)", revote_of=("judge-pairwise", "probability")),
        standard(0),
        trl_reference(),
        standard_head_tied(),
        critic_of_seed(0),
        Entry("critic-m4", "Critic-RM, m=4", model_dir=str(critic), num_critiques=4, prepare=main_run),
        Entry("critic-m1-sampled", "Critic-RM, m=1, sampled T 0.8", model_dir=str(critic), temperature=0.8,
              prepare=main_run),
        ablation("lambda-constant", "λ constant 0.5", run_dir / rundir.REFINE_DIR, lambda_schedule="constant",
                 lambda_start=0.5),
        ablation("lambda-reverse", "λ reverse 0.1→0.9", run_dir / rundir.REFINE_DIR, lambda_schedule="reverse"),
        ablation("no-filter", "no filtering", work / "no-filter" / "refine", unfiltered),
        ablation("reward-unselected", "reward on unselected critiques", work / "reward-unselected" / "refine",
                 unselected, pairing="random-k", pairs_per_example=1),
        ablation("reward-sampled", "reward reads the sampled critiques", work / "reward-sampled" / "refine",
                 sampled_reward, reward_critiques="sampled"),
        ablation("refine-none", "refine: none", work / "refine-none" / "refine",
                 refined(run_filter, work / "refine-none", strategy="none")),
        ablation("refine-summarize", "refine: summarize", work / "refine-summarize" / "refine",
                 refined(run_filter, work / "refine-summarize", strategy="summarize")),
        *(entry for k in range(1, seeds) for entry in (standard(k), critic_of_seed(k), trl_reference(k))),
    ]


def _seed_label(k: int) -> str:
    return f", seed +{k}" if k else ""


def pairs_file(config: PipelineConfig, work: Path) -> Path:
    """The config's pairs (its data section: file, columns, limit) as a plain preference file, for the models
    that train on pairs alone (the standard RMs); written once."""
    path = work / "pairs.jsonl"
    if not path.is_file():
        pairs = read_pairs(config.data, config.model).pairs
        work.mkdir(parents=True, exist_ok=True)
        write_jsonl(path, ({"id": p.id, "prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs))
    return path


def length_rule(longer: bool) -> Callable[[list[EvalExample], Path, str], None]:
    """A rule that scores each response by its length in characters (or minus it): no model, no cost."""
    sign = 1.0 if longer else -1.0

    def score(examples: list[EvalExample], report_dir: Path, data_name: str) -> None:
        results = [ExampleResult(id=e.id, subset=e.subset, section=e.section,
                                 chosen=[sign * len(t) for t in e.chosen], rejected=[sign * len(t) for t in e.rejected],
                                 chosen_chars=[len(t) for t in e.chosen], rejected_chars=[len(t) for t in e.rejected])
                   for e in examples]
        write_eval_report(f"{'longer' if longer else 'shorter'} response wins", results, report_dir,
                          {"model": None, "data": data_name, "kind": "length-rule", "seconds": 0.0})

    return score


def _train(config: PipelineConfig, data: Path, out: Path, **changes) -> None:
    """A reward model trained on `data` into `out` with the run's settings and `changes` (resumes `out`)."""
    from criticrm.training.trainer import train_reward_model

    settings = effective_train_config(dataclasses.replace(config.train, **changes), config.model)
    with rundir.working(out):
        train_reward_model(settings, data, out, model_name=config.model.model, use_cpu=config.model.device == "cpu")
    gc.collect()  # the next ablation trains another model in this process


def evaluate(entry: Entry, examples: list[EvalExample], data_name: str, report_dir: Path) -> None:
    """One evaluation: the base model as a judge (one greedy sample per response or order), a trained model,
    or the entry's own scoring (a rule, TRL's model)."""
    if entry.custom:
        entry.custom(examples, report_dir, data_name)
        return
    if entry.judge:
        config, model, sampling = EvalConfig(judge=entry.judge), ModelConfig(), SamplingConfig(num_critiques=1,
                                                                                               temperature=0.0)
    else:
        config, model, sampling = EvalConfig(name=entry.label), ModelConfig(model=entry.model_dir), SamplingConfig()
    finished = (report_dir / rundir.REPORT_JSON).is_file()  # re-read, not re-done: no segment of work
    with contextlib.nullcontext() if finished else rundir.working(report_dir):
        run_evaluation(examples, config, model,
                       ScoringConfig(num_critiques=entry.num_critiques, temperature=entry.temperature), CritiqueConfig(),
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
    return {"length_bias": summary.get("length_bias"), "length_controlled": summary.get("length_controlled_accuracy"),
            "ece": (summary.get("calibration") or {}).get("ece")}


def training_record(model_dir: str | None) -> dict | None:
    """What the training of a reward-model folder recorded (its `train_summary.json`, beside `model/`):
    steps, tokens, time, precision, λ, and the held-out accuracy; None for a judge or a missing folder."""
    summary_file = Path(model_dir).parent / rundir.TRAIN_SUMMARY_FILE if model_dir else None
    trl_file = Path(model_dir).parent / TRL_DONE_FILE if model_dir else None
    if trl_file is not None and trl_file.is_file():
        trl = json.loads(trl_file.read_text())
        return {"mode": "standard (TRL)", "steps": trl["steps"], "trained_tokens": None,
                "train_seconds": trl["train_seconds"], "precision": trl["precision"], "lambda_schedule": None,
                "held_out_accuracy": None, "held_out_pairs": trl["held_out_pairs"], "seed": trl["seed"]}
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
        tokens = f", {training['trained_tokens']:,} tok" if training.get("trained_tokens") else ""
        trained = (f"{training['steps']} steps{tokens}, {training['train_seconds'] / 60:.0f} min"
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
    head = ("| model | " + " | ".join(sections) + " | overall | length-controlled | "
            + "".join(f"Δ vs {base['label']} | " for base in bases) + "pairs |")
    lines = [head, "|" + "---|" * (len(sections) + len(bases) + 4)]
    for row in rows:
        cells = [_percent(row["sections"].get(name)) for name in sections]
        differences = "".join(f"{_difference(base, row)} | " for base in bases)
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | **{_percent(row['overall'])}** | "
                     f"{_percent(row.get('length_controlled'))} | {differences}{row['examples']} |")
    return "\n".join(lines)


def _difference(base: dict, row: dict) -> str:
    if base is row:
        return "–"
    paired = paired_bootstrap(_report_examples(base), _report_examples(row))
    return f"{100 * paired.difference:+.1f} [{100 * paired.low:+.1f}, {100 * paired.high:+.1f}]"


def seed_spread(entries: dict[str, dict], seeds: int) -> str:
    """Each main model's overall and length-controlled score seed by seed (whole-pipeline seeds), their mean
    and min–max, and the Critic-RM's lead over the standard RM of the same seed with its 95% paired interval:
    how far a one-seed difference can move by chance. Lists whatever seeds are stored so far."""
    groups = {label: [entries[f"{name}{seed_suffix(k)}"] for k in range(seeds) if f"{name}{seed_suffix(k)}" in entries]
              for name, label in SEEDED_MODELS.items()}
    if not any(len(rows) > 1 for rows in groups.values()):
        return ""
    lines = ["| model | seeds | overall per seed | mean | min–max | length-controlled per seed | mean |",
             "|---|---|---|---|---|---|---|"]
    for label, rows in groups.items():
        if not rows:
            continue
        scores = [100 * row["overall"] for row in rows]
        controlled = [100 * row["length_controlled"] for row in rows if row.get("length_controlled") is not None]
        controlled_cells = (f"{', '.join(f'{v:.1f}' for v in controlled)} | {statistics.mean(controlled):.1f}"
                            if controlled else "– | –")
        lines.append(f"| {label} | {len(scores)} | {', '.join(f'{v:.1f}' for v in scores)} | "
                     f"{statistics.mean(scores):.1f} | {min(scores):.1f}–{max(scores):.1f} | {controlled_cells} |")
    leads = []
    for k in range(seeds):
        critic, standard = (entries.get(f"{name}{seed_suffix(k)}") for name in MAIN_MODELS)
        if critic and standard:
            controlled = ("–" if critic.get("length_controlled") is None or standard.get("length_controlled") is None
                          else f"{100 * (critic['length_controlled'] - standard['length_controlled']):+.1f}")
            leads.append(f"seed +{k}: {_difference(standard, critic)} (length-controlled {controlled})")
    if leads:
        lines.append(f"\nCritic-RM minus standard RM, seed by seed, overall [95% paired CI]: {'; '.join(leads)}")
    return "\n".join(lines)


def wall_times(config: PipelineConfig, rows: list[dict], seeds: int) -> str:
    """What each step cost: every pipeline run's stages and each entry's training and evaluation, in minutes.

    Where a step's folder has its segments (`rundir.working`), the minutes are their sum, with how many
    processes did the work and on which machines; else (folders from before) the finishing process's time."""
    lines = ["| step | minutes | segments | machines |", "|---|---|---|---|"]

    def line(step: str, folder: Path, seconds: float | None) -> None:
        totals = rundir.segment_totals(folder)
        if totals:
            lines.append(f"| {step} | {totals['seconds'] / 60:.1f} | {totals['segments']} | "
                         f"{'; '.join(totals['machines'])} |")
        elif seconds is not None:
            lines.append(f"| {step} | {seconds / 60:.1f} | the finishing one | – |")

    for k in range(seeds):
        run_dir = Path(seeded(config, k).run.run_dir)
        for stage in (rundir.CRITIQUES_DIR, rundir.FILTER_DIR, rundir.REFINE_DIR, rundir.train_dir("critic"),
                      rundir.train_dir("standard")):
            finished = rundir.read_record(run_dir / stage).get("finished")
            if finished and finished.get("seconds") is not None:
                line(f"pipeline{_seed_label(k)}: {stage}", run_dir / stage, finished["seconds"])
    for row in rows:
        training = row.get("training") or {}
        if training.get("train_seconds") and row.get("model") and row["entry"].startswith(
                ("standard", "trl", "lambda", "no-filter", "reward-", "refine")):
            line(f"{row['label']}: training", Path(row["model"]).parent, training["train_seconds"])
        line(f"{row['label']}: evaluation", (ROOT / row["report"]).parent, row["eval_seconds"])
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
    parser.add_argument("--work", type=Path, default=None,
                        help="where ablations and the standard RMs keep their data and models (default: the run "
                             "folder's name + '-bench' beside it, so two configs never share one)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality")
    parser.add_argument("--seeds", type=int, default=1,
                        help="whole-pipeline seeds of the Critic-RM and the standard RM (the protocol: 3)")
    parser.add_argument("--entries", nargs="*", default=None,
                        help="run only these entries (default: all; none: only rewrite the table of stored results)")
    args = parser.parse_args()

    config = PipelineConfig.from_yaml(args.config)
    if args.run_dir:
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, run_dir=str(args.run_dir)))
    work = args.work or Path(f"{config.run.run_dir}-bench")
    table = entries(config, work, args.seeds)
    unknown = set(args.entries or []) - {entry.name for entry in table}
    if unknown:
        parser.error(f"unknown entries {sorted(unknown)}; known: {', '.join(e.name for e in table)}")
    selected = [entry for entry in table if args.entries is None or entry.name in args.entries]
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "quality.json"
    stored = json.loads(results_path.read_text()) if results_path.exists() else {"entries": {}}
    if selected:
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
        if "length_controlled" not in row and report_file.is_file():
            row |= _bias_and_calibration(json.loads(report_file.read_text())["summary"])
        if "training" not in row and (training := training_record(row["model"])):
            row["training"] = training
    results_path.write_text(json.dumps(stored, indent=2, ensure_ascii=False))
    text = markdown(rows) + "\n\n" + details(rows)
    spread = seed_spread(stored["entries"], args.seeds)
    if spread:
        text += "\n\nSeeds of the whole pipeline:\n\n" + spread
    text += "\n\nWall time of each step:\n\n" + wall_times(config, rows, args.seeds)
    (args.out / "quality.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
