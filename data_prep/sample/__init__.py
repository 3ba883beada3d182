"""Embedded MedTrinity-25M stand-in: a small, deterministic, MedTrinity-shaped sample built from
real medical images that ship inside PyPI packages (see data/sample/SOURCES.md).

Run `python -m data_prep.sample --out data/sample`; only generation needs requirements/sample.txt.
"""
