"""convert end to end: output layout, splits, untouched vs inpainted images, report, bundled sample."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from data_prep.convert import main as convert
from data_prep.images import grey_luma
from data_prep.pixel_boxes import box_iou
from data_prep.process import Settings, process_record
from data_prep.roi import detect_boxes
from data_prep.roi_scenes import scene
from data_prep.sources import Record
from data_prep.splits import split_of
from data_prep.synth import synthetic_row, write_demo_parquet
from tests.conftest import ROOT

SAMPLE = ROOT / "data" / "sample" / "medtrinity_sample.parquet"
SPLIT_FILES = ("train", "val", "test")


def green_pixels(rgb: np.ndarray, margin: int = 60) -> int:
    """Pixels clearly greener than grey: what is left of a drawn ROI stroke."""
    c = rgb.astype(np.int16)
    return int(((c[..., 1] - np.maximum(c[..., 0], c[..., 2])) > margin).sum())


def tinted_outline(rgb: np.ndarray, box: list[int]) -> float:
    """How much more colour the box outline carries than the tissue 10 px inside and outside it."""
    c = rgb.astype(np.int16)
    chroma = c.max(2) - c.min(2)
    band, ring = np.zeros(chroma.shape, np.uint8), np.zeros(chroma.shape, np.uint8)
    x1, y1, x2, y2 = box
    cv2.rectangle(band, (x1, y1), (x2, y2), 1, 5)
    cv2.rectangle(ring, (x1 - 10, y1 - 10), (x2 + 10, y2 + 10), 1, 3)
    cv2.rectangle(ring, (x1 + 10, y1 + 10), (x2 - 10, y2 - 10), 1, 3)
    return float(chroma[band > 0].mean() - chroma[ring > 0].mean())


def read_rgb(path: str | Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def load_rows(out: Path) -> dict[str, list[dict]]:
    return {s: [json.loads(x) for x in (out / f"{s}.jsonl").read_text().splitlines()] for s in SPLIT_FILES}


def image_of(row: dict) -> str:
    return row["images"][0]


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    rng = np.random.default_rng(11)
    rows = [synthetic_row(rng, k, size=(224, 256), n_boxes=k % 3, thickness=1 + k % 3) for k in range(36)]
    path = tmp_path_factory.mktemp("src") / "stream.parquet"
    write_demo_parquet(path, rows, row_group=10)
    return path, rows


@pytest.fixture(scope="module")
def converted(stream: tuple[Path, list[dict]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run with real worker processes (the others run in-process for speed)."""
    out = tmp_path_factory.mktemp("conv") / "out"
    assert convert(["--source", str(stream[0]), "--out", str(out), "--workers", "2", "--shard-size", "8",
                    "--val-ratio", "0.2", "--test-ratio", "0.2"]) == 0
    return out


def test_output_layout(converted: Path, stream: tuple[Path, list[dict]]) -> None:
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "rois.jsonl", "report.json", "report.md",
                 "contact_sheet.png"):
        assert (converted / name).is_file(), name
    rows = load_rows(converted)
    paths = {image_of(r) for rs in rows.values() for r in rs}
    files = {str(p) for p in (converted / "images").rglob("*") if p.is_file()}
    assert paths == files, "every written image is used by rows and every row's image exists"
    for p in paths:
        rel = Path(p).relative_to(converted / "images")
        assert Path(p).is_absolute() and len(rel.parts) == 2 and len(rel.parts[0]) == 2
    rois = [json.loads(x) for x in (converted / "rois.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rois] == [r["id"] for r in stream[1]]
    assert all(set(r) == {"id", "width", "height", "boxes", "flags"} for r in rois)


def test_all_rows_of_an_image_share_its_group_split(converted: Path) -> None:
    rows = load_rows(converted)
    split_of_id: dict[str, set[str]] = defaultdict(set)
    for split, rs in rows.items():
        for r in rs:
            assert r["split"] == split
            split_of_id[r["id"]].add(split)
    assert all(len(s) == 1 for s in split_of_id.values())
    groups = json.loads((converted / "report.json").read_text())["splits"]["groups"]
    assert groups["split_by"] == "group" and not groups["filled_empty_splits"]
    if groups["groups"] == len(split_of_id):  # all distinct images: every group's split is its image's
        assert all(s == {split_of(i, 0.2, 0.2)} for i, s in split_of_id.items())
    assert groups["groups"] >= 0.9 * len(split_of_id), "36 distinct synthetic scans are not near-duplicates"
    assert all(rows[s] for s in SPLIT_FILES), "36 images at 20/20% fill every split"
    tasks = defaultdict(set)
    for rs in rows.values():
        for r in rs:
            tasks[r["id"]].add(r["task"])
    assert any(t == {"locate", "verify", "diagnose"} for t in tasks.values())
    multitask = {s: [json.loads(x)["id"] for x in (converted / f"{s}_multitask.jsonl").read_text().splitlines()]
                 for s in SPLIT_FILES}
    assert {s: set(ids) for s, ids in multitask.items()} == {s: {r["id"] for r in rs} for s, rs in rows.items()}


def test_recovered_boxes_match_the_drawn_ones(converted: Path, stream: tuple[Path, list[dict]]) -> None:
    rois = {json.loads(x)["id"]: json.loads(x) for x in (converted / "rois.jsonl").read_text().splitlines()}
    truth = [(b, rois[r["id"]]["boxes"]) for r in stream[1] for b in r["boxes"]]
    found = sum(any(box_iou(b, g) > 0.8 for g in got) for b, got in truth)
    assert found >= 0.9 * len(truth), f"{found}/{len(truth)} drawn boxes recovered"
    assert all(not rois[r["id"]]["boxes"] for r in stream[1] if not r["boxes"]), "no phantom boxes"


def test_untouched_images_keep_their_bytes_and_boxed_ones_lose_the_strokes(
        converted: Path, stream: tuple[Path, list[dict]]) -> None:
    source = {r["id"]: r for r in stream[1]}
    rows = [r for rs in load_rows(converted).values() for r in rs]
    by_image = {image_of(r): r["id"] for r in rows}
    rois = {json.loads(x)["id"]: json.loads(x) for x in (converted / "rois.jsonl").read_text().splitlines()}
    checked_plain = checked_boxed = 0
    for path, id_ in by_image.items():
        if not rois[id_]["boxes"]:
            assert Path(path).read_bytes() == source[id_]["jpeg"], id_
            checked_plain += 1
        else:
            before = cv2.cvtColor(cv2.imdecode(np.frombuffer(source[id_]["jpeg"], np.uint8), cv2.IMREAD_COLOR),
                                  cv2.COLOR_BGR2RGB)
            after = read_rgb(path)
            assert green_pixels(before) > 50
            assert green_pixels(after) <= 3, f"{id_}: green stroke left after inpainting"
            assert not detect_boxes(after).boxes, id_
            assert all(tinted_outline(after, b) < 1.5 for b in rois[id_]["boxes"]), f"{id_}: tinted frame left"
            checked_boxed += 1
    assert checked_plain and checked_boxed


def test_keep_boxes_writes_every_image_byte_for_byte(stream: tuple[Path, list[dict]], tmp_path: Path) -> None:
    out = tmp_path / "keep"
    assert convert(["--source", str(stream[0]), "--out", str(out), "--workers", "0", "--keep-boxes",
                    "--limit", "12"]) == 0
    source = {r["id"]: r["jpeg"] for r in stream[1]}
    rows = [r for rs in load_rows(out).values() for r in rs]
    assert rows and all(Path(image_of(r)).read_bytes() == source[r["id"]] for r in rows)
    assert json.loads((out / "report.json").read_text())["images_written"] == {"original": 12}


def test_split_is_stable_across_runs_and_settings(stream: tuple[Path, list[dict]], converted: Path,
                                                  tmp_path: Path) -> None:
    """Same input: the same splits whatever the chunking or workers. A --limit keeps every image's
    split too, except where it moves a group to fill a split the smaller input leaves empty."""
    out = tmp_path / "again"
    assert convert(["--source", str(stream[0]), "--out", str(out), "--workers", "0", "--shard-size", "5",
                    "--val-ratio", "0.2", "--test-ratio", "0.2"]) == 0
    first = {r["id"]: s for s, rs in load_rows(converted).items() for r in rs}
    assert first == {r["id"]: s for s, rs in load_rows(out).items() for r in rs}
    limited = tmp_path / "limited"
    assert convert(["--source", str(stream[0]), "--out", str(limited), "--workers", "0", "--limit", "20",
                    "--val-ratio", "0.2", "--test-ratio", "0.2"]) == 0
    second = {r["id"]: s for s, rs in load_rows(limited).items() for r in rs}
    filled = json.loads((limited / "report.json").read_text())["splits"]["groups"]["filled_empty_splits"]
    moved = [i for i, s in second.items() if first[i] != s]
    assert second and len(moved) <= len(filled) and all(second[i] in filled for i in moved)
    ids = [f"id-{k}" for k in range(20000)]
    shares = {s: sum(split_of(i, 0.05, 0.05) == s for i in ids) / len(ids) for s in SPLIT_FILES}
    assert abs(shares["val"] - 0.05) < 0.01 and abs(shares["test"] - 0.05) < 0.01
    assert [split_of(i, 0.05, 0.05) for i in ids[:50]] == [split_of(i, 0.05, 0.05) for i in ids[:50]]


def test_report_and_contact_sheet(converted: Path) -> None:
    rep = json.loads((converted / "report.json").read_text())
    assert rep["totals"]["input_rows"] == 36 and rep["totals"]["images"] == 36
    assert sum(rep["splits"]["images"].values()) == 36
    assert sum(rep["splits"]["rows"].values()) == rep["totals"]["rows"]
    assert sum(rep["boxes_per_image"].values()) == 36 and set(rep["boxes_per_image"]) == {"0", "1", "2"}
    assert set(rep["by_modality"]) >= {"CT", "MR"}
    assert set(rep["field_fill_rates"]) == {"modality", "organ", "roi_location", "roi_area_pct", "texture",
                                           "relation", "diagnosis"}
    assert rep["field_fill_rates"]["modality"] == 1.0
    assert rep["throughput"]["images_per_s"] > 0 and rep["throughput"]["workers"] == 2
    boxed = sum(bool(json.loads(x)["boxes"]) for x in (converted / "rois.jsonl").read_text().splitlines())
    assert rep["images_written"] == {"original": 36 - boxed, "inpainted": boxed, "grey": boxed}
    assert rep["flags"]["no_box"] == 36 - boxed
    sheet = cv2.imread(str(converted / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 150 and sheet.shape[1] > 600
    assert len(rep["sample_ids"]) == 24
    md = (converted / "report.md").read_text()
    assert "![contact sheet](contact_sheet.png)" in md and "Caption field fill rates" in md


@pytest.mark.parametrize("bg, grey", [("ct", True), ("xray", True), ("pathology", False), ("fundus", False)])
def test_grey_scans_are_written_as_one_channel_and_colour_ones_keep_rgb(bg: str, grey: bool, tmp_path: Path) -> None:
    sc = scene(bg, 3, bg=bg, stroke=2, n_boxes=1)
    data = cv2.imencode(".jpg", cv2.cvtColor(sc.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    out = process_record(Record(f"grey-{bg}", "The image is a CT scan of the chest.", data=data), Settings(out=tmp_path))
    assert out.written == ("inpainted+grey" if grey else "inpainted")
    path = image_of(out.rows[0])
    with Image.open(path) as im:
        assert im.mode == ("L" if grey else "RGB") and im.size == sc.image.shape[1::-1]
    after = read_rgb(path)
    assert green_pixels(after) <= 3 and not detect_boxes(after).boxes
    if grey:  # one channel: the smeared tint is gone, not just faded (colour images keep their own)
        assert tinted_outline(after, out.roi["boxes"][0]) < 0.5


def test_grey_luma_forgives_colour_only_around_the_strokes() -> None:
    img = np.full((200, 200, 3), 100, np.uint8)
    box = [50, 50, 150, 150]
    img[40:60, 40:160] = (90, 140, 90)  # the stroke's smear, within 24 px of the top side
    img[100, 100] = (100, 100, 108)  # inside the box, 50 px from every side: grey within tol 8
    luma = grey_luma(img, [box])
    assert luma is not None and luma.shape == (200, 200) and luma[0, 0] == 100 and luma[100, 100] == 101
    assert grey_luma(img, []) is None, "without the box the smear is colour"
    img[100, 100] = (100, 100, 109)
    assert grey_luma(img, [box]) is None


def test_report_tile_shows_the_image_before_and_after_inpainting(tmp_path: Path) -> None:
    """Inpainting works on the decoded array in place; a sampled record keeps the original for its tile."""
    row = synthetic_row(np.random.default_rng(2), 0, n_boxes=1, thickness=3)
    out = process_record(Record("tile", row["caption"], data=row["jpeg"]), Settings(out=tmp_path), tile_below=1.0)
    assert out.written == "inpainted+grey" and out.tile is not None
    tile = cv2.imdecode(np.frombuffer(base64.b64decode(out.tile.jpeg_b64), np.uint8), cv2.IMREAD_COLOR_RGB)
    before, after = np.split(tile.astype(int), 2, axis=1)
    greenness = [(half[..., 1] - np.maximum(half[..., 0], half[..., 2])).max() for half in (before, after)]
    assert greenness[0] > 60 and greenness[1] < 30, greenness


def test_rerun_of_a_finished_output_resumes_and_changes_nothing(stream: tuple[Path, list[dict]],
                                                               tmp_path: Path) -> None:
    out = tmp_path / "twice"
    args = ["--source", str(stream[0]), "--out", str(out), "--workers", "0", "--shard-size", "10", "--limit", "16"]
    assert convert(args) == 0
    before = {f: (out / f).read_bytes() for f in ("train.jsonl", "val.jsonl", "test.jsonl", "rois.jsonl")}
    assert convert(args) == 0
    assert before == {f: (out / f).read_bytes() for f in before}
    tp = json.loads((out / "report.json").read_text())["throughput"]
    assert tp["resumed_chunks"] == 2 and tp["processed_this_run"] == 0
    assert convert(args[:-1] + ["17"]) == 2, "other settings into the same --out are refused"
    assert convert(args[:-1] + ["17", "--overwrite"]) == 0


def test_cli_dispatch(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = lambda *a: subprocess.run([sys.executable, "-m", "data_prep", *a], cwd=ROOT, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    assert run("convert", "--help").returncode == 0
    bad = run("nonsense")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    ratio = run("convert", "--source", "x", "--out", str(tmp_path), "--val-ratio", "0.7", "--test-ratio", "0.4")
    assert ratio.returncode == 2 and "must be in" in ratio.stderr and "Traceback" not in ratio.stderr


def test_bundled_sample_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "sample"
    assert convert(["--source", str(SAMPLE), "--out", str(out), "--workers", "2"]) == 0
    rep = json.loads((out / "report.json").read_text())
    manifest = [json.loads(x) for x in (SAMPLE.parent / "manifest.jsonl").read_text().splitlines()]
    assert rep["totals"]["input_rows"] == len(manifest)
    assert rep["totals"]["images"] >= 0.95 * len(manifest), rep["skipped"]
    rois = {json.loads(x)["id"]: json.loads(x) for x in (out / "rois.jsonl").read_text().splitlines()}
    assert set(rois) == {m["id"] for m in manifest}
    truth = [(b, rois[m["id"]]["boxes"]) for m in manifest for b in m["boxes"]]
    found = sum(any(box_iou(b, g) > 0.5 for g in got) for b, got in truth)
    assert found >= 0.9 * len(truth), f"{found}/{len(truth)} manifest boxes recovered"
    rows = [r for rs in load_rows(out).values() for r in rs]
    assert {r["task"] for r in rows} == {"locate", "verify", "diagnose"}
    assert all(Path(image_of(r)).is_file() for r in rows)
    leftovers = [image_of(r) for r in rows if r["task"] == "locate" and green_pixels(read_rgb(image_of(r))) > 20]
    assert not leftovers, f"green strokes left in {len(leftovers)} training images"
    grey_scans = {m["id"] for m in manifest if m["modality"] in ("CT", "MR", "X-ray")}
    tints = [tinted_outline(read_rgb(image_of(r)), b) for r in rows
             if r["task"] == "locate" and r["id"] in grey_scans for b in rois[r["id"]]["boxes"]]
    assert tints and float(np.mean(tints)) < 1 and float(np.percentile(tints, 90)) < 3, "grey scans keep a tinted ROI frame"


def test_extract_with_an_openai_compatible_endpoint(stream: tuple[Path, list[dict]], tmp_path: Path) -> None:
    """--extract-with reaches the endpoint from the workers and the report counts its answers."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answer = {"modality": "CT", "organ": "liver", "roi_location": "left", "roi_area_pct": 3.0,
              "texture": "a hypodense area", "relation": "near the capsule", "diagnosis": "a cyst from the LLM"}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"choices": [{"message": {"content": json.dumps(answer)}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = tmp_path / "llm"
        url = f"http://127.0.0.1:{server.server_port}/v1"
        assert convert(["--source", str(stream[0]), "--out", str(out), "--workers", "2", "--limit", "6",
                        "--extract-with", url, "--extract-model", "m"]) == 0
    finally:
        server.shutdown()
    rep = json.loads((out / "report.json").read_text())
    assert rep["llm_extract"] == {"answered": 6}
    rows = [r for rs in load_rows(out).values() for r in rs]
    assert rows and all(r["fields"]["diagnosis"] == "a cyst from the LLM" for r in rows)
