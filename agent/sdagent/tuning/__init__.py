"""Tuning: candidate plans measured on this host, the decision rule, and the search that keeps
the fastest (stock is the fallback)."""
