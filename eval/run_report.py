"""A run's output folder: metrics.json, predictions.jsonl, report.md and its PNGs.

Figures: headline.png (the headline table), per_modality.png (0-1 metrics per modality),
gallery.png (ground-truth box green, predicted box red, reference vs generated report, verify
probabilities) and, given the trainer log, training_curves.png (per-task losses and learned weights).
"""
from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from data_prep.draw import GREEN, RED, draw_box  # noqa: E402
from eval.score import HEADLINE  # noqa: E402
from eval.trainlogs import Curves  # noqa: E402

LABELS = {
    "bleu_1": "BLEU-1", "bleu_2": "BLEU-2", "bleu_3": "BLEU-3", "bleu_4": "BLEU-4", "rouge_l": "ROUGE-L",
    "cider": "CIDEr", "meteor": "METEOR", "iou_mean": "ROI IoU (mean)", "iou_acc50": "ROI Acc@0.5",
    "verify_accuracy": "Verify accuracy", "verify_auroc": "Verify AUROC", "malformed_rate": "Malformed rate",
    "report_fields_complete": "Reports with every field",
}
# Metrics on a 0-1 scale, comparable in one chart (BLEU is sacrebleu's 0-100, CIDEr is 0-10).
UNIT_METRICS = ("rouge_l", "meteor", "iou_mean", "iou_acc50", "verify_accuracy", "verify_auroc", "malformed_rate",
                "report_fields_complete")
GALLERY_SIZE = 6


def fmt(value: Any, key: str = "") -> str:
    """A metric for tables: BLEU with 2 decimals (0-100 scale), others with 3; n/a when undefined."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}" if key.startswith("bleu") else f"{value:.3f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def headline_png(metrics: dict[str, Any], path: Path) -> None:
    rows = [[LABELS[k], fmt(metrics.get(k), k)] for k in HEADLINE]
    fig, ax = plt.subplots(figsize=(4.2, 0.32 * len(rows) + 0.6))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=["metric", "value"], loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def per_modality_png(per_modality: dict[str, dict[str, Any]], path: Path) -> None:
    modalities = list(per_modality)
    keys = [k for k in UNIT_METRICS if any(per_modality[m].get(k) is not None for m in modalities)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(modalities) * max(1, len(keys)) / 3), 4))
    width = 0.8 / max(1, len(keys))
    x = np.arange(len(modalities))
    for i, key in enumerate(keys):
        values = [per_modality[m].get(key) or 0.0 for m in modalities]
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=LABELS[key])
    ax.set_xticks(x, [f"{m}\n(n={per_modality[m]['counts']['images']})" for m in modalities])
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (0-1)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Per-modality metrics")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def gallery_items(records: Sequence[dict[str, Any]], n: int = GALLERY_SIZE) -> list[dict[str, Any]]:
    """The first n images with a locate answer, joined with their report and verify answers."""
    by_id: dict[str, dict[str, Any]] = {}
    for r in records:
        item = by_id.setdefault(r["id"], {"id": r["id"], "image": r["image"]})
        if r["task"] == "verify":
            item["p_pos" if r["label"] else "p_neg"] = None if r["malformed"] else r["p_yes"]
        else:
            item[r["task"]] = r
    return [item for item in by_id.values() if "locate" in item][:n]


def _wrap(text: str, width: int = 70, max_lines: int = 12) -> str:
    """Wrapped for the gallery, blank lines dropped and cut at max_lines (answers can be runaway text)."""
    lines = [w for line in text.splitlines() if line.strip() for w in textwrap.wrap(line, width)]
    return "\n".join(lines[:max_lines] + (["..."] if len(lines) > max_lines else [])) or "(empty)"


def gallery_png(items: Sequence[dict[str, Any]], path: Path) -> None:
    fig, axes = plt.subplots(len(items), 2, figsize=(12, 4.2 * len(items)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.5]})
    for (ax_img, ax_txt), item in zip(axes, items):
        locate = item["locate"]
        with Image.open(item["image"]) as im:
            rgb = np.asarray(im.convert("RGB"))
        thickness = max(2, round(max(rgb.shape[:2]) / 200))
        for box in locate["gt_boxes"]:
            rgb = draw_box(rgb, box, GREEN, thickness)
        for box in locate["pred_boxes"]:
            rgb = draw_box(rgb, box, RED, thickness)
        ax_img.imshow(rgb)
        ax_img.set_title(f"{locate['modality']}  IoU {locate['iou']:.2f}"
                         + ("  (no box parsed)" if locate["malformed"] else ""), fontsize=9)
        ax_img.axis("off")
        diagnose = item.get("diagnose")
        reference = diagnose["reference"] if diagnose else "(no report row)"
        generated = (diagnose["answer"] or f"(no answer: {diagnose['error']})") if diagnose else "-"
        verify = "  ".join(f"{name} {fmt(item[key])}" for name, key in (("positive", "p_pos"), ("negative", "p_neg"))
                           if key in item)
        ax_txt.text(0, 1, f"REFERENCE\n{_wrap(reference)}\n\nGENERATED\n{_wrap(generated)}\n\n"
                          f"verify p(yes): {verify or 'n/a'}", va="top", ha="left", fontsize=7.5, family="monospace",
                    transform=ax_txt.transAxes)
        ax_txt.axis("off")
    fig.suptitle("green: ground truth, red: prediction", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def curves_png(curves: Curves, path: Path) -> None:
    panels = [("training losses", "loss", sorted(k for k in curves if k.startswith(("loss", "eval_loss")))),
              ("learned task weights 0.5*exp(-s)", "weight", sorted(k for k in curves if k.startswith("weight_")))]
    panels = [p for p in panels if p[2]]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), squeeze=False)
    for ax, (title, ylabel, keys) in zip(axes[0], panels):
        for key in keys:
            steps, values = zip(*curves[key])
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=key)
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(metrics: dict[str, Any], figures: dict[str, str]) -> str:
    run, overall, per_mod = metrics["run"], metrics["overall"], metrics["per_modality"]
    c = overall["counts"]
    lines = [
        f"# Evaluation: {run['model']} on {run['split']}", "",
        *([f"**What these numbers mean:** {run['context']}", ""] if run.get("context") else []),
        f"Endpoint `{run['url']}`, family `{run['family']}`, data `{run['data']}`, {c['images']} images "
        f"({c['locate']} locate, {c['verify_positive']} + {c['verify_negative']} verify, {c['diagnose']} diagnose "
        f"answers; {c['malformed']} malformed, {c['request_errors']} request errors). {run['created']}.", "",
        "## Headline", "",
        markdown_table(["metric", "value"], [[LABELS[k], fmt(overall.get(k), k)] for k in HEADLINE]), "",
    ]
    if figures.get("headline"):
        lines += [f"![headline]({figures['headline']})", ""]
    lines += ["## Per modality", "",
              markdown_table(["modality", "images"] + [LABELS[k] for k in HEADLINE],
                             [[m, str(v["counts"]["images"])] + [fmt(v.get(k), k) for k in HEADLINE]
                              for m, v in per_mod.items()]), ""]
    for key, title in (("per_modality", "per modality"), ("gallery", "gallery"), ("curves", "training curves")):
        if figures.get(key):
            lines += [f"![{title}]({figures[key]})", ""]
    lines += ["## How these are measured", "", *[f"- {note}" for note in run["notes"]], ""]
    return "\n".join(lines)


def write_outputs(out: Path, metrics: dict[str, Any], records: Sequence[dict[str, Any]],
                  curves: Curves | None = None) -> dict[str, str]:
    """Write every output file; returns the figures written ({kind: file name})."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    figures: dict[str, str] = {}
    headline_png(metrics["overall"], out / "headline.png")
    figures["headline"] = "headline.png"
    if metrics["per_modality"]:
        per_modality_png(metrics["per_modality"], out / "per_modality.png")
        figures["per_modality"] = "per_modality.png"
    items = gallery_items(records)
    if items:
        gallery_png(items, out / "gallery.png")
        figures["gallery"] = "gallery.png"
    if curves:
        curves_png(curves, out / "training_curves.png")
        figures["curves"] = "training_curves.png"
    metrics = {**metrics, "figures": figures}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    (out / "report.md").write_text(markdown(metrics, figures))
    return figures
