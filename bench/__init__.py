"""Benchmarks: `python -m bench [NAME ...]` (or `make bench`) prints a table of ratios.

Every figure is a ratio against a baseline measured in the same run, so a
noisy shared machine moves both sides alike. Results also go to .bench/results.json.
"""
