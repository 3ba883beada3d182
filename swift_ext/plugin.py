"""Entry point for `--external_plugins /abs/path/swift_ext/plugin.py`.

swift imports this file by path (also when infer/export/deploy re-read args.json), so it puts the
project root on sys.path and registers everything medvlm adds to swift's registries.

The data path of one training step (names from medvlm_vocab):
1. templates.py `annotate`: each encoded row gets per-token task ids, weights, verify decisions;
2. negatives.py (from the template's collator): a share of verify rows become "no" samples;
3. templates.py `compute_sft_loss`: the annotations ride on the model outputs (`outputs["med"]`);
4. loss_type.py (`--loss_type med_multitask`) scatters them onto the labels -> multitask_loss.py's math.
"""
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from swift.loss import loss_map  # noqa: E402

from swift_ext.loss_type import MedMultitaskLoss  # noqa: E402
from swift_ext.models import register_med_models  # noqa: E402
from swift_ext.templates import register_med_templates  # noqa: E402

register_med_templates()
register_med_models()
loss_map["med_multitask"] = MedMultitaskLoss
