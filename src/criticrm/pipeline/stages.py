"""Each stage of stage 1 as a function over folders: configs and an input folder in, an output folder out.

What `criticrm critique|filter|refine` run, what the pipeline recipe composes, and what a script that
redoes one stage with another setting (an ablation) calls. Every stage resumes its output folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from criticrm import rundir
from criticrm.data.readers import DataConfig, LoadResult, load_pairs, render_transcript
from criticrm.data.schema import PreferencePair
from criticrm.generation.base import Generator, SamplingConfig
from criticrm.generation.factory import GeneratorConfig, generator_for
from criticrm.models.backbone import ModelConfig, load_tokenizer
from criticrm.pipeline.critique import CritiqueConfig, run_critique
from criticrm.pipeline.filter import FilterConfig, load_critique_dir, read_filtered, run_filter
from criticrm.pipeline.refine import RefineConfig, run_refine
from criticrm.pipeline.report import report_from_dirs
from criticrm.prompts.templates import TemplateSet


class LazyGenerator:
    """A model's generator, loaded on first use only: a run whose model stages are all finished loads nothing,
    and the stages that do use it share one loaded model."""

    def __init__(self, config: GeneratorConfig, model: ModelConfig, batch_size: int):
        self.config, self.model, self.batch_size = config, model, batch_size
        self._generator: Generator | None = None

    @classmethod
    def of(cls, critique: CritiqueConfig, model: ModelConfig) -> LazyGenerator:
        """The generator a critique config describes (also what refinement and the judges use)."""
        return cls(critique.generator, model, critique.batch_size)

    def get(self) -> Generator:
        if self._generator is None:
            self._generator = generator_for(self.config, self.model, self.batch_size)
        return self._generator

    def release(self) -> None:
        """Let go of the loaded model (a self-training round's model is not needed once its data is made)."""
        self._generator = None


def read_pairs(data: DataConfig, model: ModelConfig) -> LoadResult:
    """Load and validate pairs; conversational prompts use the model's chat template if asked.

    Skipped invalid rows (`skip_invalid`) are reported on stderr with the first problems.
    """
    if data.chat_format == "template":
        tokenizer = load_tokenizer(model.model)

        def render(messages):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        render = render_transcript
    result = load_pairs(data, render)
    if result.invalid_rows:
        print(f"skipped {result.invalid_rows} invalid row(s) of {result.rows_read} (skip_invalid); first problems:",
              file=sys.stderr)
        for problem in result.problems[:5]:
            print(f"  {problem}", file=sys.stderr)
    return result


def critique_stage(pairs: list[PreferencePair], critique: CritiqueConfig, sampling: SamplingConfig,
                   generator: LazyGenerator, out_dir: Path) -> dict:
    """Stage 1a: sample critiques of every response into `out_dir`; returns the summary."""
    return run_critique(pairs, generator.get(), TemplateSet(critique.template), critique, sampling, out_dir)


def filter_stage(critiques_dir: Path, config: FilterConfig, out_dir: Path) -> dict:
    """Stage 1b: filter the critiques of a critique folder into `out_dir`; returns the stats.

    The critique folder is recorded (`source.json`): a data report of a later stage reads its records.
    """
    pairs, records, _ = load_critique_dir(critiques_dir)
    _, stats = run_filter(pairs, records, config, out_dir)
    (out_dir / rundir.SOURCE_FILE).write_text(json.dumps({"critiques": str(Path(critiques_dir).resolve())}, indent=2))
    return stats


def refine_stage(filter_dir: Path, config: RefineConfig, generator: LazyGenerator, out_dir: Path) -> dict:
    """Stage 1c: refine the kept critiques of a filter folder and write the training data into `out_dir`.

    The model is loaded only when some pair needs a model call.
    """
    decisions = read_filtered(filter_dir)
    needs_model = config.strategy != "none" and any(d.supervised for d in decisions)
    return run_refine(decisions, generator.get() if needs_model else None, config, out_dir)


def critiques_dir_of(filter_dir: Path) -> Path | None:
    """The critique folder a filter folder was made from (recorded by `filter_stage`), if known."""
    source = Path(filter_dir) / rundir.SOURCE_FILE
    return Path(json.loads(source.read_text())["critiques"]) if source.is_file() else None


def stage_report(out_dir: Path, filter_dir: Path, refine_dir: Path | None = None) -> Path:
    """The data report of a filter folder (and of the refine folder made from it), written into `out_dir`."""
    return report_from_dirs(out_dir, critiques_dir_of(filter_dir), filter_dir, refine_dir)
