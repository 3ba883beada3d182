"""The serving venv (.venv-serve): vLLM and the Qwen-VL processors import beside its own torch."""
from __future__ import annotations

import subprocess

from tests.conftest import ROOT

SERVE_PY = ROOT / ".venv-serve" / "bin" / "python"


def test_serve_venv_imports_vllm_and_processors(models_dir):
    code = (
        "import torch, torchvision, vllm, swift\n"
        "from transformers import AutoProcessor\n"
        f"p = AutoProcessor.from_pretrained({str(models_dir / 'tiny-qwen2-vl')!r})\n"
        "print(vllm.__version__, torch.__version__, type(p.video_processor).__name__)\n"
    )
    proc = subprocess.run([str(SERVE_PY), "-c", code], capture_output=True, text=True, timeout=600,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    vllm_version, torch_version, video = proc.stdout.split()
    assert vllm_version.startswith("0.3") and torch_version.startswith("2.1")
    assert video == "Qwen2VLVideoProcessor"
