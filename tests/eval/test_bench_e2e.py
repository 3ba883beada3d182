"""`make serve` (tiny Qwen2-VL, transformers backend) + `make bench-eval` on each benchmark's release-format fixture.

The random-weight tiny model answers nonsense, so what is checked is the plumbing a real run
relies on: the Makefile target, the served endpoint with its API key, images from files and from
parquet, and complete outputs with the right counts. Scoring values are checked in
test_bench_scoring.py and test_bench_run.py.
"""
from __future__ import annotations

import json

import pytest

from eval.bench.published import TITLES
from tests.bench_fixtures import OMNI, PATHVQA, PMC_VQA, SLAKE, VQA_RAD, WRITERS
from tests.conftest import free_port, run_make

API_KEY = "bench-key"
QUESTIONS = {  # each fixture's questions in release order
    "vqa-rad": [q for q, _ in VQA_RAD], "pathvqa": [q for q, _ in PATHVQA], "slake": [row[2] for row in SLAKE],
    "pmc-vqa": [row[2] for row in PMC_VQA], "omnimedvqa": [e[1] for entries in OMNI.values() for e in entries],
}


@pytest.fixture(scope="module")
def tiny_server(models_dir, tmp_path_factory):
    """The tiny checkpoint served as `make serve` serves it, behind the gateway, with an API key."""
    state, port = tmp_path_factory.mktemp("bench-serve"), free_port()
    run_make("serve", f"SERVE_MODEL={models_dir / 'tiny-qwen2-vl'}", "BACKEND=transformers", f"PORT={port}",
             f"API_KEY={API_KEY}", f"SERVE_STATE={state}", timeout=600)
    yield port
    run_make("stop", f"SERVE_STATE={state}")


@pytest.mark.slow
@pytest.mark.parametrize("benchmark", list(QUESTIONS))
def test_make_bench_eval_on_the_tiny_served_model(benchmark, tiny_server, tmp_path):
    questions = QUESTIONS[benchmark]
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    WRITERS[benchmark](data)
    proc = run_make("bench-eval", f"BENCH={benchmark}", f"BENCH_DATA={data}", f"BENCH_OUT={out}",
                    f"PORT={tiny_server}", f"API_KEY={API_KEY}", "BENCH_ARGS=--max-tokens 16", timeout=300)
    assert f"{len(questions)} questions in" in proc.stderr and "(0 failed)" in proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["model"] == "medvlm" and metrics["counts"]["request_errors"] == 0
    assert metrics["overall"]["total"] == len(questions)
    if benchmark in ("vqa-rad", "slake", "pathvqa"):
        assert metrics["closed"]["total"] + metrics["open"]["total"] == len(questions)
    assert 0 <= metrics["headline"]["percent"] <= 100
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["question"] for r in records] == questions
    assert all(isinstance(r["response"], str) for r in records)
    assert (out / "report.md").read_text().startswith(f"# {TITLES[benchmark]}: medvlm")
