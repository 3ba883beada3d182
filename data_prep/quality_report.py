"""Quality report of a convert run: report.json, report.md and a contact-sheet PNG.

The contact sheet is what a person checks first: per sampled image, the original with the
recovered boxes drawn in red (a miss or a phantom box shows at a glance) beside the training
image (a leftover green stroke shows at a glance).
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from data_prep.draw import RED, draw_box
from data_prep.images import fit
from data_prep.stats import Stats

PANEL = 160
COLUMNS = 4
LABEL_H = 30
GUTTER = 8
HEADER_H = 26
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _panel(rgb: np.ndarray, boxes: list[list[int]]) -> np.ndarray:
    """The image fitted into a PANEL x PANEL square (black letterbox), boxes scaled and drawn."""
    small, s = fit(rgb, PANEL)
    for b in boxes:
        small = draw_box(small, [v * s for v in b], color=RED, thickness=2)
    canvas = np.zeros((PANEL, PANEL, 3), np.uint8)
    h, w = small.shape[:2]
    y, x = (PANEL - h) // 2, (PANEL - w) // 2
    canvas[y:y + h, x:x + w] = small
    return canvas


def render_tile(original: np.ndarray, boxes: list[list[int]], trained: np.ndarray | None = None) -> bytes:
    """JPEG of [original + recovered boxes | training image (RGB or grey)]; trained=None means unchanged."""
    if trained is not None and trained.ndim == 2:
        trained = cv2.cvtColor(trained, cv2.COLOR_GRAY2RGB)
    tile = np.hstack([_panel(original, boxes), _panel(original if trained is None else trained, [])])
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(tile, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    return buf.tobytes() if ok else b""


def _text(img: np.ndarray, text: str, x: int, y: int, scale: float = 0.4) -> None:
    cv2.putText(img, text, (x, y), _FONT, scale, (20, 20, 20), 1, cv2.LINE_AA)


def contact_sheet(stats: Stats) -> np.ndarray | None:
    """Grid of the sampled tiles with id and modality under each; None when nothing was sampled."""
    tiles = [t for t in stats.tiles if t.jpeg_b64]
    if not tiles:
        return None
    tw, th = 2 * PANEL, PANEL + LABEL_H
    rows = (len(tiles) + COLUMNS - 1) // COLUMNS
    sheet = np.full((HEADER_H + rows * th, COLUMNS * (tw + GUTTER) - GUTTER, 3), 255, np.uint8)
    _text(sheet, "left: original with recovered boxes (red)   right: training image", 6, 17, 0.5)
    for i, t in enumerate(tiles):
        rgb = cv2.imdecode(np.frombuffer(base64.b64decode(t.jpeg_b64), np.uint8), cv2.IMREAD_COLOR_RGB)
        if rgb is None:
            continue
        y, x = HEADER_H + (i // COLUMNS) * th, (i % COLUMNS) * (tw + GUTTER)
        sheet[y:y + PANEL, x:x + tw] = rgb if rgb.shape[:2] == (PANEL, tw) else cv2.resize(rgb, (tw, PANEL))
        ident = t.id if len(t.id) <= 44 else t.id[:20] + ".." + t.id[-22:]
        _text(sheet, ident, x + 4, y + PANEL + 12)
        _text(sheet, t.modality, x + 4, y + PANEL + 25)
    return sheet


def _rates(stats: Stats) -> dict[str, float]:
    images = stats.get("totals", "images")
    return {k: round(v / images, 4) if images else 0.0 for k, v in sorted(stats.groups["fields_filled"].items())}


def summary(stats: Stats, meta: dict[str, Any]) -> dict[str, Any]:
    """The report as a JSON-ready dict."""
    g = stats.groups
    return {
        **meta,
        "totals": {"input_rows": stats.get("totals", "inputs"), "images": stats.get("totals", "images"),
                   "rows": stats.get("totals", "rows"), "skipped": sum(g["skipped"].values())},
        "splits": meta.get("splits") or {"images": {}, "rows": {}, "groups": {}},
        "task_rows": dict(g["task_rows"]),
        "by_modality": dict(g["modality"].most_common()),
        "by_source": dict(g["source"].most_common()),
        "boxes_per_image": dict(sorted(g["boxes_per_image"].items())),
        "skipped": dict(g["skipped"].most_common()),
        "flags": dict(g["flags"].most_common()),
        "field_fill_rates": _rates(stats),
        "images_written": dict(g["image_written"].most_common()),
        "llm_extract": dict(g["llm_extract"]),
        "sample_ids": [t.id for t in stats.tiles],
        "errors": stats.errors,
    }


def _table(title: str, counts: dict[str, Any], total: int | None = None, head: str = "count") -> str:
    if not counts:
        return f"## {title}\n\n(none)\n"
    lines = [f"## {title}", "", f"| | {head} |" + (" share |" if total else ""),
             "|---|---:|" + ("---:|" if total else "")]
    for k, v in counts.items():
        share = f" {100 * v / total:.1f}% |" if total else ""
        lines.append(f"| {k} | {v} |{share}")
    return "\n".join(lines) + "\n"


def groups_section(g: dict[str, Any], images: int) -> str:
    """How the split was made: group count, largest group and how groups were formed."""
    if not g:
        return "## Groups\n\n(no images)\n"
    if g["split_by"] == "id":
        return "## Groups\n\nSplit by id (`--split-by id`): every image is its own group.\n"
    big = g["largest"]
    formed = []
    if g["keyed_groups"]:
        from_file = f"; {g['images_keyed_from_file']} keyed by --groups" if g["images_keyed_from_file"] else ""
        formed.append(f"{g['keyed_groups']} by an explicit key ({g['images_keyed']} images{from_file})")
    if g["hash_groups"]:
        formed.append(f"{g['hash_groups']} of near-duplicate images (perceptual hashes within {g['distance']} of "
                      "64 bits, linked transitively)")
    if g["single_images"]:
        flat = f", {g['images_without_hash']} of them flat (no hash)" if g["images_without_hash"] else ""
        formed.append(f"{g['single_images']} single images{flat}")
    lines = [
        "## Groups", "",
        f"Split by group: {g['groups']} groups: {'; '.join(formed)}.  ",
        f"Largest group: {big['images']} images ({big['rows']} rows, in {big['split']}), e.g. `{big['example_id']}`.  ",
        "Groups per split: " + ", ".join(f"{s} {n}" for s, n in g["groups_per_split"].items()) + ".",
    ]
    if g["filled_empty_splits"]:
        lines.append(f"Moved one group from train into each split that would have been empty: "
                     f"{', '.join(g['filled_empty_splits'])}.")
    if not big.get("keyed") and big["images"] >= 20 and big["images"] > 0.01 * images:
        lines.append(f"**Check the largest group**: {100 * big['images'] / images:.1f}% of all images are linked as "
                     "near-duplicates. If they are not copies of one image, lower --group-distance.")
    return "\n".join(lines) + "\n"


def markdown(rep: dict[str, Any], sheet: str | None) -> str:
    t, tp = rep["totals"], rep.get("throughput", {})
    images = t["images"]
    parts = [
        "# data_prep convert report", "",
        f"Source: {rep.get('source', '?')}  ",
        f"Input rows: {t['input_rows']}, images written: {images}, task rows: {t['rows']}, "
        f"skipped: {t['skipped']}  ",
        f"Throughput: {tp.get('images_per_s', 0):.1f} images/s over {tp.get('elapsed_s', 0):.1f} s "
        f"with {tp.get('workers', '?')} worker(s); {tp.get('processed_this_run', 0)} rows this run, "
        f"{tp.get('resumed_chunks', 0)} chunk(s) already done before it.", "",
        _table("Splits (images)", rep["splits"]["images"], images),
        _table("Splits (rows)", rep["splits"]["rows"], t["rows"]),
        groups_section(rep["splits"].get("groups") or {}, images),
        _table("Task rows", rep["task_rows"], t["rows"]),
        _table("Modality", rep["by_modality"], images),
        _table("Source", rep["by_source"], images),
        _table("Boxes per image", rep["boxes_per_image"], images),
        _table("Skipped rows by reason", rep["skipped"], t["input_rows"]),
        _table("Flags", rep["flags"], t["input_rows"]),
        _table("Caption field fill rates", {k: f"{100 * v:.1f}%" for k, v in rep["field_fill_rates"].items()},
               head="filled"),
        _table("Training images written", rep["images_written"], images),
    ]
    if rep["llm_extract"]:
        parts.append(_table("LLM caption extraction (--extract-with)", rep["llm_extract"], images))
    if rep["errors"]:
        parts += ["## Internal errors (first few)", "", "```", *rep["errors"], "```", ""]
    if sheet:
        parts += ["## Contact sheet", "", "Random sample (fixed by id hash). Left: original with the "
                  "recovered boxes in red. Right: the training image written.", "",
                  f"![contact sheet]({sheet})", ""]
    return "\n".join(parts)


def write_report(out: Path, stats: Stats, meta: dict[str, Any]) -> dict[str, Any]:
    """Write report.json, report.md and contact_sheet.png into out; returns the report dict."""
    sheet = contact_sheet(stats)
    sheet_name = None
    if sheet is not None:
        sheet_name = "contact_sheet.png"
        cv2.imwrite(str(out / sheet_name), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    rep = summary(stats, {**meta, "contact_sheet": sheet_name})
    (out / "report.json").write_text(json.dumps(rep, indent=1, ensure_ascii=False) + "\n")
    (out / "report.md").write_text(markdown(rep, sheet_name))
    return rep
