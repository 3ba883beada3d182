"""Reading swift's console log: the health of a training run whose exit status says nothing of it."""
from __future__ import annotations

import math
import re
from pathlib import Path


def nonfinite_grad_steps(log: Path) -> list[int]:
    """Logged training steps (1-based, in log order) whose gradient norm is nan or inf.

    A step whose gradient is not finite still exits 0 and saves a checkpoint, so the exit status alone
    would call it ok; swift prints each logging row as a dict with `'grad_norm': '<value>'`.
    """
    norms = re.findall(r"'grad_norm': '([^']*)'", log.read_text(errors="replace"))
    return [i for i, v in enumerate(norms, 1) if not math.isfinite(float(v))]
