"""sdagent: make Stable Diffusion on CPU fast, reproducibly, and prove it per host."""

__version__ = "0.1.0"


def load_pipeline(model_dir, **kw):  # noqa: ANN001, ANN003, ANN201 - see sdagent.serving.load_pipeline
    """A ready diffusers pipeline run the way the plan in effect says (sdagent.serving.load_pipeline)."""
    from sdagent.serving import load_pipeline as _load

    return _load(model_dir, **kw)
