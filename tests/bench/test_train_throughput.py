"""bench/train_throughput.py: its measurement helpers, and the whole bench at tiny shape on CPU."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT))
from bench.throughput_plugin import sequence_lengths, step_flops  # noqa: E402
from bench.train_throughput import ANSWER_TOKENS, derived_recipe, probe_batch  # noqa: E402

GPU_RECIPE = yaml.safe_load((ROOT / "recipes/sft/qwen2-vl-2b.yaml").read_text())


def test_plain_config_is_stock_swift_and_b_c_differ_only_in_supervised_logits():
    a, b, c = (derived_recipe(GPU_RECIPE, name) for name in "abc")
    assert "loss_type" not in a and "med_task_uncertainty" not in a.get("modules_to_save", [])
    assert not any(k.startswith("MEDVLM_") for k in a["ENV"]) and a["remove_unused_columns"] is True
    assert b["loss_type"] == c["loss_type"] == "med_multitask"
    assert (b["ENV"]["MEDVLM_SUPERVISED_LOGITS"], c["ENV"]["MEDVLM_SUPERVISED_LOGITS"]) == ("0", "1")
    assert {k: v for k, v in b.items() if k != "ENV"} == {k: v for k, v in c.items() if k != "ENV"}
    assert "MEDVLM_SUPERVISED_LOGITS" not in GPU_RECIPE["ENV"], "the recipe itself is not modified"


def test_probe_picks_the_largest_batch_within_the_budget():
    gib = 2**30
    assert probe_batch(per_sample_bytes=0.5 * gib, static_bytes=5 * gib, budget_bytes=20 * gib, start=8, cap=64) == 30
    assert probe_batch(0.5 * gib, 5 * gib, 200 * gib, 8, 64) == 64
    assert probe_batch(4 * gib, 5 * gib, 6 * gib, 8, 64) == 1


def test_real_tokens_of_padded_and_packed_batches():
    padded = {"input_ids": torch.zeros(2, 5, dtype=torch.long),
              "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])}
    assert sequence_lengths(padded) == [3, 5]
    packed = {"input_ids": torch.zeros(1, 8, dtype=torch.long),
              "position_ids": torch.tensor([0, 1, 2, 0, 1, 2, 3, 4]).expand(3, 1, 8)}  # mrope [3, 1, L]
    assert sequence_lengths(packed) == [3, 5]


def test_flops_count_real_tokens_and_only_supervised_logits():
    from transformers import AutoConfig

    config = AutoConfig.for_model("qwen2_vl", text_config={"hidden_size": 64, "num_hidden_layers": 2,
                                                           "num_attention_heads": 2, "num_key_value_heads": 1})
    groups = {"lm_linear": 1000, "lm_head": 500, "vision": 0}
    base = step_flops(groups, config, [10], supervised=4, patches=0)
    assert base == 4 * 1000 * 10 + 4 * 500 * 4 + 6 * 2 * 64 * 100
    assert step_flops(groups, config, [10], supervised=8, patches=0) - base == 4 * 500 * 4


@pytest.mark.slow
def test_bench_runs_three_configurations_at_tiny_shape(tmp_path, models_dir):
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "bench/train_throughput.py"), "--model", str(models_dir / "tiny-qwen2-vl"),
           "--family", "qwen2_vl", "--steps", "2", "--warmup", "1", "--batch", "2", "--mem-budget-gib", "6",
           "--max-batch", "8", "--work", str(work), "--out", str(out), "--name", "test"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "train_throughput-test.json").read_text())
    assert ANSWER_TOKENS[0] <= result["data"]["answer_tokens_median"] <= ANSWER_TOKENS[1]
    configs = result["configs"]
    assert set(configs) == {"a", "b", "c"}
    for name, c in configs.items():
        assert c["status"] == "ok" and c["steps_measured"] == 2, name
        assert c["samples_per_s"] > 0 and 0 < c["real_tokens_per_s"] <= c["padded_tokens_per_s"], name
        assert 0 < c["mfu"] < 1 and c["peak_mem_gib"] > c["static_mem_gib"] > 0, name
    assert configs["a"]["batch"] == configs["b"]["batch"] == 2
    assert configs["c"]["probe"]["batch"] == configs["c"]["batch"] >= 1
    assert "supervised logits" in configs["c"]["options"]
    assert set(configs["c"]["not_applied"]) == {"padding_free", "liger"}  # no GPU here
    table = (out / "train_throughput-test.md").read_text()
    assert table.count("\n| ") == 4 and "samples/s" in table
