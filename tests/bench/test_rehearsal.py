"""bench/swift_logs.py and bench/rehearsal.py: a stage that exits 0 after a NaN gradient is not recorded as ok."""
from __future__ import annotations

import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT))
from bench.rehearsal import check_gradients  # noqa: E402
from bench.swift_logs import nonfinite_grad_steps  # noqa: E402

# swift's logging rows as they appear in a stage log (a progress bar and a warning in between)
LOG = """Train:  50%|#####     | 1/2
{'loss': '16.0', 'grad_norm': '5.449', 'learning_rate': '0.0001', 'global_step/max_steps': '1/3'}
UserWarning: None of the inputs have requires_grad=True. Gradients will be None
{'loss': '16.2', 'grad_norm': 'nan', 'learning_rate': '0.0001', 'global_step/max_steps': '2/3'}
{'loss': '16.3', 'grad_norm': 'inf', 'learning_rate': '0', 'global_step/max_steps': '3/3'}
{'train_runtime': '12.0', 'train_loss': '16.1'}
"""


def test_nonfinite_steps_are_found_in_log_order(tmp_path):
    log = tmp_path / "sft.log"
    log.write_text(LOG)
    assert nonfinite_grad_steps(log) == [2, 3]


def test_a_finished_stage_with_a_nan_step_is_marked_and_a_clean_one_stays_ok(tmp_path):
    bad, good = tmp_path / "bad.log", tmp_path / "good.log"
    bad.write_text(LOG)
    good.write_text(LOG.splitlines()[1] + "\n")
    results = {"bad": {"status": "ok", "log": str(bad)}, "good": {"status": "ok", "log": str(good)},
               "timeout": {"status": "timeout", "log": str(bad)}}
    for result in results.values():
        check_gradients(result)
    assert results["bad"]["status"] == "nonfinite-grad" and "[2, 3]" in results["bad"]["reason"]
    assert results["good"]["status"] == "ok" and "reason" not in results["good"]
    assert results["timeout"]["status"] == "timeout"  # an earlier verdict is kept
