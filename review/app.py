"""`make review` / `python -m review.app`: the clinician review web app (Gradio) in front of `make serve`.

Three tabs: Read (ask the model about an uploaded or picked image: boxes, verify gate, report),
Correct (fix the boxes and the report; Save writes a DPO pair) and Compare (two answers side by side;
a decisive pick writes a DPO pair). Decisions go to REVIEW_DIR (review/store.py).

Safety: loopback by default; any other host needs a users file (review/users.py). Uploads are
bounded in bytes (by Gradio's upload limit and again here) and pixels, read by content; the only
files opened are Gradio's own upload copies and the images of the configured data split, never a
path typed in the page. The endpoint's API key is read from MEDVLM_API_KEY and only ever sent to
the endpoint.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry from a hospital network
import gradio as gr  # noqa: E402
import numpy as np
from PIL import Image

from data_prep.draw import draw_box
from eval.client import EndpointError, list_models
from medvlm_vocab import API_KEY_ENV, MAX_IMAGE_PIXELS
from review.box_editor import (CSS_TEMPLATE, HTML_TEMPLATE, JS_ON_LOAD, boxes_to_text, display_url, editor_value,
                               text_to_boxes)
from review.decisions import ERROR_CATEGORIES, clean_boxes, comparison_record, correction_row, same_answer, utc_now
from review.images import MAX_UPLOAD_BYTES, ImageRejected, ReviewImage, read_image, read_upload
from review.model import STEPS, Endpoint, ask_model
from review.store import JUDGEMENTS, PAIRS, append_jsonl, read_json, store_image, write_atomic
from review.users import Authenticator, UsersFileError, load_users
from serve.launch import is_loopback

RED, ORANGE, BLUE = (255, 0, 0), (255, 140, 0), (0, 120, 255)
SHOWN_SIDE = 1024
CSS = """
.gate { font-weight: 700; padding: 2px 8px; border-radius: 4px; margin-right: 6px; }
.gate-ok { background: #1b7f3b; color: white; }
.gate-review { background: #f0a020; color: black; }
"""
VERDICT_CHOICES = [("A is better", "A"), ("B is better", "B"), ("Tie", "tie"), ("Both wrong", "both_wrong")]
CATEGORY_CHOICES = [(label, key) for key, label in ERROR_CATEGORIES.items()]


@dataclass
class ReviewConfig:
    review_dir: Path
    endpoints: list[Endpoint]
    family: str = "qwen2_vl"
    api_key: str | None = None
    max_pixels: int | None = None
    min_pixels: int | None = None
    threshold: float = 0.5
    data_dir: Path | None = None
    split: str = "test"
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_image_pixels: int = MAX_IMAGE_PIXELS
    timeout: float = 600.0
    authenticator: Authenticator | None = None
    split_images: dict[str, tuple[str, Path]] = field(default_factory=dict)  # id -> (label, path)


# --- image and answer helpers (no Gradio) -----------------------------------------------------------

def image_state(config: ReviewConfig, image: ReviewImage) -> dict[str, Any]:
    """The current image, stored under REVIEW_DIR/images by content hash (server-side state only)."""
    path = store_image(config.review_dir, image.data, image.sha256, image.suffix)
    return {"sha256": image.sha256, "path": str(path), "width": image.width, "height": image.height,
            "note": image.note, "src": display_url(image.data)}


def drawn(path: str, layers: list[tuple[list[list[float]], tuple[int, int, int]]]) -> np.ndarray:
    """The image with each layer of boxes in its colour, scaled to at most SHOWN_SIDE for the page."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    thickness = max(2, round(max(rgb.shape[:2]) / 200))
    for boxes, color in layers:
        for box in boxes:
            rgb = draw_box(rgb, box, color, thickness)
    shown = Image.fromarray(rgb)
    shown.thumbnail((SHOWN_SIDE, SHOWN_SIDE))
    return np.asarray(shown)


def gate_markdown(answer: dict[str, Any]) -> str:
    p = answer.get("verify_probability")
    prob = f"P(yes) = {p:.3f}" if p is not None else "not asked (no region or no finding to verify)"
    accepted = answer["status"] == "diagnosis"
    badge = f"<span class='gate {'gate-ok' if accepted else 'gate-review'}'>{answer['status']}</span>"
    lines = [f"{badge} verify {prob}, threshold {answer['threshold']}",
             f"model `{answer['model']}` ({answer['endpoint']}), temperature {answer['sampling']['temperature']}",
             f"{len(answer['boxes'])} box(es): " + ("; ".join(", ".join(f"{v:.0f}" for v in b) for b in answer["boxes"])
                                                   or "none found in the answer")]
    if answer.get("finding"):
        lines.insert(1, f"finding checked: {answer['finding']}")
    if answer.get("diagnosis"):
        lines.insert(1, f"diagnosis: **{answer['diagnosis']}**")
    return "\n\n".join(lines)


def candidates_path(config: ReviewConfig, image_sha: str, mode: str, a: Endpoint, b: Endpoint,
                    temperature: float) -> Path:
    key = json.dumps([image_sha, mode, a.url, a.model, b.url, b.model, round(temperature, 3), config.family])
    return config.review_dir / "candidates" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def split_choices(data_dir: Path, split: str) -> dict[str, tuple[str, Path]]:
    """id -> (label, image path) for the images of a data_prep split (read once, at start)."""
    from eval.samples import DataError, load_split

    try:
        rows = load_split(data_dir, split)
    except DataError as e:
        print(f"note: no images to pick from ({e})", file=sys.stderr)
        return {}
    out: dict[str, tuple[str, Path]] = {}
    for row in rows:
        fields = row.get("fields") or {}
        subject = " ".join(v for v in (fields.get("modality"), fields.get("organ")) if v)
        out.setdefault(row["id"], (f"{row['id'][:8]} {subject}".strip(), Path(row["images"][0])))
    return out


# --- the app -----------------------------------------------------------------------------------------

def build_app(config: ReviewConfig) -> gr.Blocks:
    """The Blocks app; GRADIO_TEMP_DIR must name the upload folder before this runs (main sets it)."""
    endpoints = {e.name: e for e in config.endpoints}
    upload_root = Path(os.environ["GRADIO_TEMP_DIR"]).resolve()

    def reviewer_id(typed: str, request: gr.Request) -> str:
        if config.authenticator is not None:
            return request.username or ""
        if not typed or not typed.strip():
            raise gr.Error("Type your reviewer id (top of the page) before saving.")
        return typed.strip()

    def fail(message: str) -> gr.Error:
        return gr.Error(message, duration=None)

    def load_image(image: ReviewImage):
        """(image state, preview, note, upload box): the upload box is emptied for the next file."""
        state = image_state(config, image)
        preview = drawn(state["path"], [])
        return state, preview, f"{image.width}x{image.height} px · {image.note} · sha256 {image.sha256[:12]}…", None

    def rejected(message: str):
        """Keep the current image, say why in a toast and under the upload box, empty the upload box."""
        gr.Warning(message)
        return gr.skip(), gr.skip(), f"**{message}**", None

    def on_upload(file_path: str | None):
        if not file_path:
            return rejected("No file received.")
        path = Path(file_path).resolve()
        if not path.is_relative_to(upload_root):  # only Gradio's own copy of an upload is ever opened
            return rejected("Refused: not an uploaded file.")
        try:
            image = read_upload(path, max_bytes=config.max_upload_bytes, max_pixels=config.max_image_pixels)
        except ImageRejected as e:
            return rejected(f"Cannot use this file: {e}")
        return load_image(image)

    def on_pick(image_id: str | None):
        if not image_id or image_id not in config.split_images:  # the id, never a path, comes from the page
            return rejected("Unknown image id.")
        try:
            image = read_image(config.split_images[image_id][1].read_bytes(), max_bytes=config.max_upload_bytes,
                               max_pixels=config.max_image_pixels)
        except ImageRejected as e:
            return rejected(f"Cannot use this image: {e}")
        return load_image(image)

    def ask_one(image: dict[str, Any], endpoint: Endpoint, temperature: float, progress: Any, step0: int,
                total: int) -> dict[str, Any]:
        done = [step0]

        def on_step(task: str) -> None:
            progress((done[0], total), desc=f"{endpoint.name}: {STEPS.get(task, task)}…")
            done[0] += 1

        try:
            answer = ask_model(image["path"], endpoint, family=config.family, api_key=config.api_key,
                               threshold=config.threshold, max_pixels=config.max_pixels,
                               min_pixels=config.min_pixels, sampling={"temperature": temperature},
                               on_step=on_step, timeout=config.timeout)
        except EndpointError as e:
            raise fail(f"The model server ({endpoint.name}) cannot answer: {e}") from None
        answer["boxes"] = clean_boxes(answer["boxes"], *answer["size"]) if answer["boxes"] else []
        return answer

    def on_read(image: dict[str, Any] | None, endpoint_name: str, progress=gr.Progress()):
        if not image:
            raise fail("Upload or pick an image first.")
        answer = ask_one(image, endpoints[endpoint_name], 0.0, progress, 0, 3)
        boxes = answer["boxes"]
        editor = editor_value(image["src"], image["width"], image["height"], [list(b) for b in boxes], boxes)
        return (answer, drawn(image["path"], [(boxes, RED)]), gate_markdown(answer), answer["report"],
                editor, boxes_to_text(boxes), answer["report"],
                "Correct the boxes and the report, then Save." if boxes else
                "The model gave no box: draw one on the image (or type its coordinates), fix the report, then Save.")

    def on_boxes_drawn(value: dict[str, Any] | None) -> str:
        return boxes_to_text((value or {}).get("boxes") or [])

    def on_boxes_typed(text: str, value: dict[str, Any] | None):
        if not value or not value.get("src"):
            return gr.skip()
        try:
            boxes = clean_boxes(text_to_boxes(text), value["w"], value["h"])
        except ValueError:
            return gr.skip()  # half-typed: the editor keeps its boxes until the text is valid
        return {**value, "boxes": boxes}

    def on_save_correction(answer: dict[str, Any] | None, image: dict[str, Any] | None, boxes_text: str,
                           report: str, category: str | None, reason: str, typed_reviewer: str,
                           request: gr.Request) -> str:
        if not answer or not image:
            raise fail("Ask the model in the Read tab first.")
        reviewer = reviewer_id(typed_reviewer, request)
        try:
            row = correction_row(answer, report, text_to_boxes(boxes_text), reviewer=reviewer,
                                 error_type=category or "", reason=reason or "", image=image["path"],
                                 image_sha256=image["sha256"])
        except ValueError as e:
            raise fail(str(e)) from None
        if row is None:
            return "No change from the model's answer: nothing saved."
        append_jsonl(config.review_dir / PAIRS, row)
        return f"Saved correction by **{reviewer}** at {row['time']} (pair `{row['id']}`)."

    def on_compare(image: dict[str, Any] | None, mode: str, temperature: float, fresh: bool, progress: Any):
        if not image:
            raise fail("Upload or pick an image first (Read tab).")
        first = config.endpoints[0]
        second = config.endpoints[1] if mode == "endpoints" and len(config.endpoints) > 1 else first
        temperature = float(temperature)
        path = candidates_path(config, image["sha256"], mode, first, second, temperature)
        cached = None if fresh else read_json(path)
        if cached:
            a, b, origin = cached["a"], cached["b"], f"the same two answers other reviewers saw ({cached['time']})"
        else:
            a = ask_one(image, first, temperature, progress, 0, 6)
            b = ask_one(image, second, temperature, progress, 3, 6)
            write_atomic(path, json.dumps({"a": a, "b": b, "time": utc_now()}).encode())
            origin = "new answers"
        note = f"Candidates: {origin}."
        if same_answer(a, b):
            note += (" **The two answers are identical**: only tie or both wrong can be saved; raise the "
                     "temperature and press *New answers*.")
        shown = drawn(image["path"], [(a["boxes"], ORANGE), (b["boxes"], BLUE)])
        return ({"a": a, "b": b}, shown, a["report"], b["report"], gate_markdown(a), gate_markdown(b), note)

    def on_compare_ask(image, mode, temperature, progress=gr.Progress()):
        return on_compare(image, mode, temperature, False, progress)

    def on_compare_fresh(image, mode, temperature, progress=gr.Progress()):
        return on_compare(image, mode, temperature, True, progress)

    def on_save_compare(pair: dict[str, Any] | None, image: dict[str, Any] | None, verdict: str | None,
                        category: str | None, reason: str, typed_reviewer: str, request: gr.Request) -> str:
        if not pair or not image:
            raise fail("Ask for two answers first.")
        if not verdict:
            raise fail("Pick A, B, tie or both wrong.")
        reviewer = reviewer_id(typed_reviewer, request)
        try:
            is_pair, record = comparison_record(pair["a"], pair["b"], verdict, reviewer=reviewer,
                                                error_type=category or "", reason=reason or "",
                                                image=image["path"], image_sha256=image["sha256"])
        except ValueError as e:
            raise fail(str(e)) from None
        append_jsonl(config.review_dir / (PAIRS if is_pair else JUDGEMENTS), record)
        what = "pair" if is_pair else "judgement (no pair)"
        return f"Saved {what}: **{verdict}** by **{reviewer}** at {record['time']} (`{record['id']}`)."

    def on_load(request: gr.Request):
        lines = []
        for e in config.endpoints:
            try:
                served = ", ".join(list_models(e.url, config.api_key, timeout=5.0)) or "no model"
            except EndpointError as err:
                served = f"not reachable ({str(err).split(';')[0]})"
            lines.append(f"**{e.name}**: `{e.url}` serving {served}")
        who = (f"Signed in as **{request.username}**." if config.authenticator is not None else "")
        return " · ".join(lines) + ("  \n" + who if who else "")

    with gr.Blocks(title="medvlm review", delete_cache=(900, 3600), analytics_enabled=False) as demo:
        gr.Markdown("## medvlm review — read, correct and compare the model's answers")
        with gr.Row():
            endpoints_md = gr.Markdown("checking the model server…", elem_id="endpoints")
            typed_reviewer = gr.Textbox(label="Reviewer id", value=os.environ.get("USER", ""), max_lines=1,
                                        scale=0, min_width=200, elem_id="reviewer",
                                        visible=config.authenticator is None)
        image = gr.State(None)
        answer = gr.State(None)
        pair = gr.State(None)
        with gr.Tabs():
            with gr.Tab("Read", id="read", elem_id="tab-read"):
                with gr.Row():
                    with gr.Column(scale=1):
                        upload = gr.File(label="Upload a JPEG, PNG or DICOM file", type="filepath",
                                         elem_id="upload")
                        pick = gr.Dropdown(choices=[(label, i) for i, (label, _) in config.split_images.items()],
                                           label=f"…or pick an image of the {config.split} split", value=None,
                                           elem_id="pick", visible=bool(config.split_images))
                        endpoint = gr.Dropdown(choices=list(endpoints), value=config.endpoints[0].name,
                                               label="Model server", visible=len(endpoints) > 1)
                        ask_button = gr.Button("Ask the model", variant="primary", elem_id="ask")
                        image_note = gr.Markdown(elem_id="image-note")
                    with gr.Column(scale=2):
                        read_image_out = gr.Image(label="Image with the model's boxes (red)", type="numpy",
                                                  format="png", interactive=False, elem_id="read-image",
                                                  buttons=["fullscreen"])
                        gate = gr.Markdown(elem_id="gate")
                        report_out = gr.Textbox(label="Structured report", lines=7, interactive=False,
                                                elem_id="report")
            with gr.Tab("Correct", id="correct", elem_id="tab-correct"):
                with gr.Row():
                    with gr.Column(scale=3):
                        editor = gr.HTML(value=None, html_template=HTML_TEMPLATE, css_template=CSS_TEMPLATE,
                                         js_on_load=JS_ON_LOAD, elem_id="box-editor")
                    with gr.Column(scale=2):
                        correct_hint = gr.Markdown(elem_id="correct-hint")
                        boxes_text = gr.Textbox(label="Boxes: x1, y1, x2, y2 in image pixels, one per line",
                                                lines=3, elem_id="boxes-text")
                        report_edit = gr.Textbox(label="Report (edit it)", lines=7, elem_id="report-edit")
                        correct_category = gr.Dropdown(choices=CATEGORY_CHOICES, value=None,
                                                       label="What was wrong (optional)", elem_id="correct-category")
                        correct_reason = gr.Textbox(label="Note (optional)", max_lines=2)
                        save_correction = gr.Button("Save correction", variant="primary", elem_id="save-correction")
                        correct_status = gr.Markdown(elem_id="correct-status")
            with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                with gr.Row():
                    modes = [("Two samples from " + config.endpoints[0].name, "samples")]
                    if len(config.endpoints) > 1:
                        modes.append((f"{config.endpoints[0].name} vs {config.endpoints[1].name}", "endpoints"))
                    mode = gr.Radio(choices=modes, value=modes[-1][1], label="Candidates", elem_id="compare-mode")
                    temperature = gr.Slider(0.0, 1.5, value=0.8, step=0.05, label="Temperature",
                                            elem_id="temperature")
                    compare_button = gr.Button("Ask for two answers", variant="primary", elem_id="compare-ask")
                    fresh_button = gr.Button("New answers", elem_id="compare-fresh")
                compare_note = gr.Markdown(elem_id="compare-note")
                with gr.Row():
                    compare_image = gr.Image(label="Boxes: A orange, B blue", type="numpy", format="png",
                                             interactive=False, elem_id="compare-image", buttons=["fullscreen"])
                    with gr.Column():
                        gate_a = gr.Markdown(elem_id="gate-a")
                        report_a = gr.Textbox(label="A (orange)", lines=7, interactive=False, elem_id="report-a")
                    with gr.Column():
                        gate_b = gr.Markdown(elem_id="gate-b")
                        report_b = gr.Textbox(label="B (blue)", lines=7, interactive=False, elem_id="report-b")
                with gr.Row():
                    verdict = gr.Radio(choices=VERDICT_CHOICES, value=None, label="Which answer is better?",
                                       elem_id="verdict")
                    compare_category = gr.Dropdown(choices=CATEGORY_CHOICES, value=None,
                                                   label="Error in the other answer (needed for A or B)",
                                                   elem_id="compare-category")
                    compare_reason = gr.Textbox(label="Note (optional)", max_lines=2)
                    save_compare = gr.Button("Save decision", variant="primary", elem_id="save-compare")
                compare_status = gr.Markdown(elem_id="compare-status")

        loaded = [image, read_image_out, image_note, upload]
        upload.upload(on_upload, upload, loaded)
        pick.input(on_pick, pick, loaded)
        ask_button.click(on_read, [image, endpoint],
                         [answer, read_image_out, gate, report_out, editor, boxes_text, report_edit, correct_hint])
        editor.boxes_edited(on_boxes_drawn, editor, boxes_text)
        boxes_text.input(on_boxes_typed, [boxes_text, editor], editor)
        save_correction.click(on_save_correction, [answer, image, boxes_text, report_edit, correct_category,
                                                   correct_reason, typed_reviewer], correct_status)
        compare_outputs = [pair, compare_image, report_a, report_b, gate_a, gate_b, compare_note]
        compare_button.click(on_compare_ask, [image, mode, temperature], compare_outputs)
        fresh_button.click(on_compare_fresh, [image, mode, temperature], compare_outputs)
        save_compare.click(on_save_compare, [pair, image, verdict, compare_category, compare_reason,
                                             typed_reviewer], compare_status)
        demo.load(on_load, None, endpoints_md)
    return demo


class StartError(Exception):
    """A configuration the app refuses to start with; printed without a traceback."""


def check_exposure(host: str, users: Path | None) -> None:
    if not is_loopback(host) and users is None:
        raise StartError(f"refusing to listen on {host} without a users file: anyone who can reach this port "
                         "could write training data. Create one with `python -m review.users add FILE NAME` "
                         "and pass USERS=FILE, or keep the default HOST=127.0.0.1.")


def serve_limits(recipe: Path | None) -> tuple[int | None, int | None]:
    """(MAX_PIXELS, MIN_PIXELS) of the serve recipe's ENV: Qwen2.5-VL boxes are in resized pixels."""
    if recipe is None or not recipe.is_file():
        return None, None
    import yaml

    env = (yaml.safe_load(recipe.read_text()) or {}).get("ENV") or {}
    return (int(env["MAX_PIXELS"]) if env.get("MAX_PIXELS") else None,
            int(env["MIN_PIXELS"]) if env.get("MIN_PIXELS") else None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m review.app", description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the endpoint `make serve` started")
    p.add_argument("--model", default=None, help="served model name (default: the endpoint's first)")
    p.add_argument("--name", default="A", help="label of the endpoint in the page")
    p.add_argument("--url-b", default=None, help="a second endpoint for Compare (e.g. the DPO model)")
    p.add_argument("--model-b", default=None)
    p.add_argument("--name-b", default="B")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--review-dir", type=Path, default=Path("output/review"))
    p.add_argument("--users", type=Path, default=None, help="users file (required off loopback)")
    p.add_argument("--data", type=Path, default=None, help="a data_prep output folder to pick images from")
    p.add_argument("--split", default="test")
    p.add_argument("--family", default="qwen2_vl")
    p.add_argument("--serve-recipe", type=Path, default=None, help="serve recipe: its ENV MAX_PIXELS/MIN_PIXELS")
    p.add_argument("--max-pixels", type=int, default=None, help="the server's MAX_PIXELS (overrides the recipe)")
    p.add_argument("--threshold", type=float, default=0.5, help="P(yes) needed to give a diagnosis")
    p.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 2**20)
    p.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per model request")
    return p.parse_args(argv)


def configure(args: argparse.Namespace) -> ReviewConfig:
    check_exposure(args.host, args.users)
    authenticator = None
    if args.users is not None:
        try:
            authenticator = Authenticator(load_users(args.users))
        except UsersFileError as e:
            raise StartError(str(e)) from None
    endpoints = [Endpoint(args.name, args.url.rstrip("/"), args.model)]
    if args.url_b:
        if args.name_b == args.name:
            raise StartError("the two endpoints need different names (--name, --name-b)")
        endpoints.append(Endpoint(args.name_b, args.url_b.rstrip("/"), args.model_b))
    max_pixels, min_pixels = serve_limits(args.serve_recipe)
    review_dir = args.review_dir.resolve()
    review_dir.mkdir(parents=True, exist_ok=True)
    return ReviewConfig(
        review_dir=review_dir, endpoints=endpoints, family=args.family,
        api_key=os.environ.get(API_KEY_ENV) or None, max_pixels=args.max_pixels or max_pixels,
        min_pixels=min_pixels, threshold=args.threshold, data_dir=args.data, split=args.split,
        max_upload_bytes=int(args.max_upload_mb * 2**20), max_image_pixels=args.max_image_pixels,
        timeout=args.timeout, authenticator=authenticator,
        split_images=split_choices(args.data, args.split) if args.data else {})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = configure(args)
    except StartError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Gradio reads its upload folder from the environment when the app is built (on_upload checks it).
    os.environ["GRADIO_TEMP_DIR"] = str(config.review_dir / ".uploads")
    demo = build_app(config)
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    print(f"review app on http://{args.host}:{args.port} (decisions in {config.review_dir}; "
          f"{'login required' if config.authenticator else 'no login: loopback only'})", flush=True)
    demo.queue(default_concurrency_limit=4).launch(
        server_name=args.host, server_port=args.port, auth=config.authenticator,
        auth_message="medvlm review: sign in with your reviewer account", max_file_size=config.max_upload_bytes,
        ssr_mode=False, mcp_server=False, footer_links=[], theme=theme, css=CSS, quiet=True, show_error=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
