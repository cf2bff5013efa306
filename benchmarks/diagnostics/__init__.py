"""Diagnostic scripts: each answers one question about one part (its docstring's first line says which).
``make bench`` (``benchmarks/compare.py``) is the benchmark; these are for digging into a figure."""
