"""Evaluation of a served medvlm model: a client of any OpenAI-compatible endpoint (`swift deploy`, vLLM).

Nothing in data_prep or swift_ext imports eval; eval reuses their prompts, box arithmetic and family table.
"""
