"""Clinician review app: read the served model's answers, correct or compare them, and write DPO pairs.

`make review` (python -m review.app) serves the web app; review/store.py writes the pairs file that
`make dpo PAIRS=...` trains on; `python -m review.stats` summarises the decisions. Nothing in the
earlier stages (data_prep, swift_ext, serve, eval) imports this package.
"""
