"""What the critiques of an evaluated Critic-RM look like, and whether its reward follows them (issue 16).

A Critic-RM's reward is conditioned on the critique it writes first. When it loses to the standard RM the
question is where: critiques that fail as text (cut at the token limit, looping), critiques whose own
verdict is wrong, or a reward that does not follow the critique. This reads an evaluation folder's
`examples.jsonl` (the critiques and rewards `criticrm eval` and `bench_quality.py` store) and reports:

- how many critiques ran to the token limit, and how many loop (half or more of their word 4-grams repeat);
- the written score ("Score: N/10") the critiques end with: how often there is one, and on the pairs where
  both responses' critiques have one and they differ, how often the chosen response's is higher (the
  critique's own verdict) and how often the reward orders the pair as the scores do (does it read them?);
- the mean credit (1 right, 0.5 a tie, 0 wrong) on pairs whose two critiques are both clean, against pairs
  with a looping one.

    python bench/critique_diagnostics.py bench/results/protocol/critic-m1 --out bench/results/protocol/critic-m1-critiques.json

No model is loaded: it takes seconds. m > 1 folders are read critique by critique (the pair's verdict then
uses each side's mean written score).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean

from criticrm import rundir
from criticrm.prompts.scores import parse_score

LOOP_SHARE = 0.5  # a critique loops when at least this share of its word 4-grams repeat an earlier one


def repeated_share(text: str, n: int = 4) -> float:
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if len(grams) >= 8 else 0.0


def diagnose(folder: Path) -> dict:
    rows = [json.loads(line) for line in (folder / rundir.EXAMPLES_FILE).read_text().splitlines() if line.strip()]
    critiques, pairs = [], []
    for row in rows:
        details = row.get("details") or {}
        sides = {side: [c for response in details.get(side, []) for c in response.get("critiques", [])]
                 for side in ("chosen", "rejected")}
        if not sides["chosen"] or not sides["rejected"]:
            continue  # a standard RM's or a judge's folder: no critiques to read
        scores = {side: [s for c in sides[side] if (s := parse_score(c["critique"])) is not None] for side in sides}
        loops = any(repeated_share(c["critique"]) >= LOOP_SHARE for side in sides.values() for c in side)
        critiques += [c for side in sides.values() for c in side]
        pairs.append({"credit": row["credit"], "loops": loops,
                      "reward_gap": mean(row["chosen"]) - mean(row["rejected"]),
                      "score_gap": (mean(scores["chosen"]) - mean(scores["rejected"])
                                    if scores["chosen"] and scores["rejected"] else None)})
    if not pairs:
        raise SystemExit(f"{folder}: no critiques in {rundir.EXAMPLES_FILE} (not a Critic-RM evaluation?)")
    scored = [p for p in pairs if p["score_gap"] is not None]
    decided = [p for p in scored if p["score_gap"]]

    def share(values: list[bool]) -> float | None:
        return round(sum(values) / len(values), 4) if values else None

    def accuracy(subset: list[dict]) -> dict:
        return {"pairs": len(subset), "accuracy": round(mean(p["credit"] for p in subset), 4) if subset else None}

    return {
        "folder": str(folder), "pairs": len(pairs), "critiques": len(critiques),
        "cut_at_token_limit": share([c.get("finish_reason") == "length" for c in critiques]),
        "looping": share([repeated_share(c["critique"]) >= LOOP_SHARE for c in critiques]),
        "mean_tokens": round(mean(c.get("tokens") or 0 for c in critiques), 1),
        "written_score_rate": share([parse_score(c["critique"]) is not None for c in critiques]),
        "pairs_scored_on_both_sides": len(scored),
        "pairs_decided_by_written_scores": len(decided),
        "written_scores_prefer_chosen": share([p["score_gap"] > 0 for p in decided]),
        "reward_follows_written_scores": share([(p["reward_gap"] > 0) == (p["score_gap"] > 0) for p in decided]),
        "accuracy_all": accuracy(pairs),
        "accuracy_clean_pairs": accuracy([p for p in pairs if not p["loops"]]),
        "accuracy_pairs_with_a_loop": accuracy([p for p in pairs if p["loops"]]),
    }


def markdown(result: dict) -> str:
    pct = lambda value: "–" if value is None else f"{100 * value:.1f}%"  # noqa: E731
    return "\n".join([
        "| critiques | cut at the token limit | looping | mean tokens | with a written score | pairs scored on both "
        "sides | ... with different scores | ... where they prefer the chosen | ... where the reward orders the pair "
        "the same way |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {result['critiques']} | {pct(result['cut_at_token_limit'])} | {pct(result['looping'])} | "
        f"{result['mean_tokens']} | {pct(result['written_score_rate'])} | {result['pairs_scored_on_both_sides']} | "
        f"{result['pairs_decided_by_written_scores']} | "
        f"{pct(result['written_scores_prefer_chosen'])} | {pct(result['reward_follows_written_scores'])} |",
        "",
        "| pairs | mean credit | clean pairs | mean credit | pairs with a looping critique | mean credit |",
        "|---|---|---|---|---|---|",
        f"| {result['accuracy_all']['pairs']} | {pct(result['accuracy_all']['accuracy'])} | "
        f"{result['accuracy_clean_pairs']['pairs']} | {pct(result['accuracy_clean_pairs']['accuracy'])} | "
        f"{result['accuracy_pairs_with_a_loop']['pairs']} | {pct(result['accuracy_pairs_with_a_loop']['accuracy'])} |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="evaluation folders of Critic-RMs (with examples.jsonl)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    results = [diagnose(folder) for folder in args.folders]
    for result in results:
        print(f"## {result['folder']}\n\n{markdown(result)}\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
