"""The Stable Diffusion pipeline: model directories and presets, loading, the backends'
recipes (a RunSpec in, a prepared pipeline out) and timed generation."""
