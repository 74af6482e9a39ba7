"""kdcore: the distillation engine (data, models, losses, trainer, robustness, export)."""

__version__ = "0.1.0"


def run(*args, **kwargs):
    """kdcore.run(spec, out_dir, callbacks) -> results; see kdcore.pipeline.run."""
    from kdcore.pipeline import run as _run  # lazy: importing kdcore must not import torch

    return _run(*args, **kwargs)
