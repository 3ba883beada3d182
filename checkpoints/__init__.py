"""Builders of local random-weight Qwen-VL checkpoints: the tiny embedded default and the published shapes."""
