"""sdagent: make Stable Diffusion on CPU fast, reproducibly, and prove it per host."""

__version__ = "0.1.0"
