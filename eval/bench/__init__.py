"""Public medical VQA benchmarks (VQA-RAD, SLAKE, PathVQA, PMC-VQA, OmniMedVQA) through the served endpoint.

Each benchmark is read from its published release, asked through eval.client, and scored with the
rule-based rules of MedEvalKit (the harness behind the Lingshu table), so the numbers can stand next
to the published ones. The rules, their sources and where ours deviate: docs/eval.md.
"""
