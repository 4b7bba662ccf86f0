"""The pipeline: stage 1 (`critique`, `filter`, `refine`: each a step over records), the run directory's
stage runner, and the recipe that runs every stage in order (`run_pipeline`, configured by a
`PipelineConfig`, e.g. `PipelineConfig.from_yaml("configs/demo.yaml")`)."""

__all__ = ["PipelineConfig", "run_pipeline"]


def __getattr__(name: str):
    if name in __all__:  # the recipe imports training and evaluation: only when asked for
        from criticrm.pipeline import recipe

        return getattr(recipe, name)
    raise AttributeError(name)
