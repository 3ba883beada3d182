"""`python -m eval.ask IMAGE`: locate -> verify -> diagnose on one image, against any OpenAI-compatible server.

The model is asked with the trained prompts: the report (diagnose), the region of interest
(locate), then whether the region shows the report's finding (verify), scored by P(yes) from the
answer token's logprobs. At P(yes) >= --threshold the report's impression is given as the
diagnosis; below it, or when there is no region or finding to check, the status is
"needs clinician review". The report is asked first because its modality and organ complete the
locate prompt as in training ("... in this CT image of the brain").
Prints JSON (boxes in original image pixels) and, with --out, draws the boxes on a copy of the image.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data_prep.draw import RED, draw_box
from data_prep.tasks import DIAGNOSE_PROMPTS, LOCATE_PROMPTS, subject_phrase
from eval.cli import add_endpoint_args
from eval.client import ChatClient, ChatRequest, ChatResult, EndpointError, resolve_model
from eval.family_boxes import pixel_limits, parse_boxes, to_image_space
from eval.samples import image_size, render_prompt
from eval.verify import report_fields, verify_question, yes_probability
from medvlm_vocab import FAMILIES, get_family

REVIEW = "needs clinician review"
ACCEPTED = "diagnosis"
TOP_LOGPROBS = 20


def _ask(client: ChatClient, task: str, prompt: str, image: str, max_tokens: int, top_logprobs: int = 0) -> ChatResult:
    result = client.run([ChatRequest(task, prompt, (image,), max_tokens, top_logprobs)])[0]
    if result.error:
        raise EndpointError(f"the {task} request failed: {result.error}")
    return result


def ask(image: str, client: ChatClient, family_name: str, threshold: float,
        max_pixels: int | None = None, min_pixels: int | None = None) -> dict[str, Any]:
    """The three answers for one image and the resulting status (JSON-ready)."""
    family = get_family(family_name)
    width, height = image_size(image)
    limits = pixel_limits(family, max_pixels, min_pixels) if family.bbox_space == "resized_pixels" else None

    report = _ask(client, "diagnose", DIAGNOSE_PROMPTS[0], image, 512).text or ""
    fields = report_fields(report)
    located = _ask(client, "locate", LOCATE_PROMPTS[0].format(subject=subject_phrase(fields)), image, 256).text or ""
    boxes = [[round(v, 1) for v in to_image_space(b, family, width, height, limits)] for b in parse_boxes(located)]

    question = verify_question(fields, len(boxes))
    p_yes = None
    if question:
        prompt = render_prompt(question[0], {"bbox": boxes}, family, width, height, limits)
        p_yes = yes_probability(_ask(client, "verify", prompt, image, 1, TOP_LOGPROBS).top_logprobs)
    accepted = p_yes is not None and p_yes >= threshold
    return {
        "image": image, "model": client.model, "family": family.name, "size": [width, height],
        "boxes": boxes, "report": report, "finding": question[1] if question else None,
        "verify_probability": p_yes, "threshold": threshold, "status": ACCEPTED if accepted else REVIEW,
        "diagnosis": (fields.diagnosis or fields.texture) if accepted else None, "locate_answer": located,
    }


def draw(image: str, boxes: list[list[float]], out: Path) -> None:
    """A copy of the image with the predicted boxes in red."""
    with Image.open(image) as im:
        rgb = np.asarray(im.convert("RGB"))
    thickness = max(2, round(max(rgb.shape[:2]) / 200))
    for box in boxes:
        rgb = draw_box(rgb, box, RED, thickness)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.ask", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("image", help="image file")
    add_endpoint_args(p, batch=False)
    p.add_argument("--family", default="qwen2_vl", choices=sorted(FAMILIES), help="model family (default qwen2_vl)")
    p.add_argument("--out", default=None, help="write the image with the predicted boxes here (PNG)")
    p.add_argument("--threshold", type=float, default=0.5, help="P(yes) needed to give a diagnosis (default 0.5)")
    p.add_argument("--max-pixels", type=int, default=None, help="MAX_PIXELS of the server (Qwen2.5-VL boxes)")
    p.add_argument("--min-pixels", type=int, default=None, help="MIN_PIXELS of the server (Qwen2.5-VL boxes)")
    args = p.parse_args(argv)
    try:
        if not Path(args.image).is_file():
            raise FileNotFoundError(f"{args.image} is not a file")
        image_size(args.image)
        model = resolve_model(args.url, args.api_key, args.model)
        client = ChatClient(args.url, model, api_key=args.api_key, concurrency=1, timeout=args.timeout)
        result = ask(args.image, client, args.family, args.threshold, args.max_pixels, args.min_pixels)
        if args.out:
            draw(args.image, result["boxes"], Path(args.out))
            result["drawn"] = args.out
    except (EndpointError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
