"""`make demo`: the whole chain on the embedded default, as the README's first command runs it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import free_port, run_make


@pytest.mark.slow
def test_make_demo_writes_metrics_and_a_report_with_boxes(tmp_path):
    out = tmp_path / "eval"
    proc = run_make("demo", f"DATA={tmp_path / 'data'}", f"OUTPUT={tmp_path / 'sft'}",
                    f"DPO_OUTPUT={tmp_path / 'dpo'}", f"MERGED={tmp_path / 'merged'}",
                    f"SERVE_STATE={tmp_path / 'serve'}", f"EVAL_OUT={out}", f"PORT={free_port()}", timeout=2400)
    assert f"report: {out}/report.md" in proc.stdout
    assert not (tmp_path / "serve" / "server.json").exists()  # make stop ran

    overall = json.loads((out / "metrics.json").read_text())["overall"]
    n_test = sum(1 for line in (tmp_path / "data" / "test.jsonl").open() if '"task": "locate"' in line)
    assert overall["counts"]["locate"] == overall["counts"]["diagnose"] == n_test
    assert overall["counts"]["verify_positive"] == overall["counts"]["verify_negative"] == n_test
    assert overall["counts"]["request_errors"] == 0
    for key in ("bleu_1", "bleu_4"):
        assert 0 <= overall[key] <= 100
    assert 0 <= overall["rouge_l"] <= 1 and overall["cider"] >= 0
    assert 0 <= overall["iou_mean"] <= 1 and 0 <= overall["malformed_rate"] <= 1
    assert overall["verify_auroc"] is None or 0 <= overall["verify_auroc"] <= 1

    report = (out / "report.md").read_text()
    assert "gallery.png" in report and "training_curves.png" in report
    gallery = np.asarray(Image.open(out / "gallery.png").convert("RGB")).astype(int)
    green = (gallery[..., 1] > 180) & (gallery[..., 0] < 80) & (gallery[..., 2] < 80)
    assert green.sum() > 100  # the ground-truth boxes are drawn

    ask = json.loads((out / "ask.json").read_text())
    assert "report" in ask and ask["status"] in {"diagnosis", "needs clinician review"}
    if ask["verify_probability"] is None:  # no region or finding to verify: never a diagnosis
        assert ask["status"] == "needs clinician review"
    else:
        assert 0 <= ask["verify_probability"] <= 1
