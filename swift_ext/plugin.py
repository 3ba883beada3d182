"""Entry point for `--external_plugins /abs/path/swift_ext/plugin.py`.

swift imports this file by path (also when infer/export/deploy re-read args.json), so it puts the
project root on sys.path and registers everything medvlm adds to swift's registries.
"""
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from swift.loss import loss_map  # noqa: E402

from swift_ext.loss import MedMultitaskLoss  # noqa: E402
from swift_ext.models import register_med_models  # noqa: E402
from swift_ext.templates import register_med_templates  # noqa: E402

register_med_templates()
register_med_models()
loss_map["med_multitask"] = MedMultitaskLoss
