"""The Makefile as a newcomer meets it: every target's prerequisites expand (no variable used before it is
defined), and the CI entry point runs the README's two commands in the README's order."""
from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import ROOT


def prerequisites(target: str, *variables: str) -> list[str]:
    """The expanded prerequisites of `target` as `make -pn` prints them (nothing is run)."""
    out = subprocess.run(["make", "-pn", target, *variables], cwd=ROOT, capture_output=True, text=True,
                         check=False).stdout
    line = next(line for line in out.splitlines()
                if line.startswith(f"{target}:") and " = " not in line and ":=" not in line)  # not a variable
    return line.split(":", 1)[1].split()


@pytest.mark.parametrize("target,expected", [
    ("sft", [".venv/.medvlm-installed", "models/.tiny-stamp", "output/data/train_multitask.jsonl"]),
    ("dpo", [".venv/.medvlm-installed", "models/.tiny-stamp", "output/sft/last-checkpoint",
             "output/data/pairs/train.jsonl", "output/data/pairs/val.jsonl"]),
    ("test", [".venv/.medvlm-installed", "models/.tiny-stamp", ".venv-serve/.medvlm-installed",
              ".venv-review/.medvlm-installed"]),
])
def test_a_first_command_builds_what_it_needs(target, expected):
    assert prerequisites(target, "DEEPSPEED=") == expected


def test_a_user_checkpoint_needs_no_tiny_models():
    assert "models/.tiny-stamp" not in prerequisites("sft", "MODEL=/ckpt/Qwen2-VL-2B-Instruct", "DEEPSPEED=")


def test_no_target_reads_an_undefined_variable():
    for target in ("data", "sft", "dpo", "merge", "serve", "stop", "eval", "demo", "test"):
        proc = subprocess.run(["make", "--warn-undefined-variables", "-n", target], cwd=ROOT,
                              capture_output=True, text=True, check=False)
        assert "undefined variable" not in proc.stderr, (target, proc.stderr)


def test_ci_runs_the_readme_commands_in_order():
    readme_block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    readme = [line.split("#")[0].strip() for line in readme_block.splitlines() if line.strip()]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.startswith("make ")]
    assert readme[:2] == ci == ["make demo", "make test"]
