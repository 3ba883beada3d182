"""Test harness: everything runs offline, on CPU, against the tiny checkpoints and the bundled sample."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "MODELSCOPE_OFFLINE": "1",
    "USE_HF": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "CUDA_VISIBLE_DEVICES": "",
}
os.environ.update(OFFLINE_ENV)

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(os.environ.get("MEDVLM_MODELS", ROOT / "models"))
SAMPLE = ROOT / "data" / "sample" / "medtrinity_sample.parquet"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Folder with the tiny checkpoints written by `make tiny-model`."""
    if not (MODELS / "tiny-qwen2-vl" / "config.json").exists():
        pytest.fail(f"no tiny checkpoints under {MODELS}: run `make tiny-model` (make test does)")
    return MODELS


def run_make(*args: str, timeout: int = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a make target from the repository root; fail the test with its output tail."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(["make", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def free_port() -> int:
    """A loopback port nothing listens on (for servers under test, and for refused connections)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
