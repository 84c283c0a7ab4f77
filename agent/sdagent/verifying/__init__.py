"""Verifying: targets, the checks and how they decide the exit code, the verify sequence,
and its reports (table, JSON, Prometheus textfile)."""
