"""Measuring: statistics, in-process benchmarks, fresh-process measurement workers, FLOPs and
GEMM peaks, and the latency ladder built on them."""
