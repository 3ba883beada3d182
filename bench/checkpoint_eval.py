"""Held-out evaluation of a LoRA checkpoint on the lesion task: ROI IoU and verify accuracy.

In-process with swift's own template (so prompts, image tokens and grounding tags are rendered
exactly as in training) and peft for the adapter. Locate is greedy-decoded and its Qwen2-VL box
(0-1000) parsed back to pixels; verify is scored from the logits of the first answer token, so a
model that always says "yes" shows up as 50% accuracy with an AUROC that can still rank.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from data_prep.boxes import box_iou

BOX_RE = re.compile(r"<\|box_start\|>\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*,\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*<\|box_end\|>")
NORM = 1000.0  # Qwen2-VL grounding coordinates


@dataclass(frozen=True)
class TestImage:
    """One held-out image: its locate prompt, verify question and truth."""
    id: str
    image: str
    width: int
    height: int
    true_box: tuple[float, float, float, float]
    locate_prompt: str
    verify_prompt: str
    verify_objects: dict
    finding: str


@dataclass(frozen=True)
class VerifyQuestion:
    image: TestImage
    prompt: str
    label: int  # 1: the image's own finding, 0: another image's finding of the other kind


def load_test_images(test_jsonl: Path, rois_jsonl: Path, truth: dict[str, Sequence[float]]) -> list[TestImage]:
    """Group the converter's per-task test rows by image; the truth box is the generated lesion's."""
    sizes = {r["id"]: (r["width"], r["height"]) for r in map(json.loads, rois_jsonl.read_text().splitlines())}
    by_id: dict[str, dict[str, dict]] = {}
    for row in map(json.loads, test_jsonl.read_text().splitlines()):
        by_id.setdefault(row["id"], {})[row["task"]] = row
    out = []
    for id_, rows in sorted(by_id.items()):
        if "locate" not in rows or "verify" not in rows:
            continue
        verify = rows["verify"]
        w, h = sizes[id_]
        out.append(TestImage(id_, rows["locate"]["images"][0], w, h, tuple(truth[id_]),
                             rows["locate"]["messages"][0]["content"], verify["messages"][0]["content"],
                             verify["objects"], verify["finding"]))
    return out


def verify_questions(images: list[TestImage]) -> list[VerifyQuestion]:
    """Per image its own finding (yes) and the finding of the next image of the other kind (no)."""
    questions = []
    for i, img in enumerate(images):
        questions.append(VerifyQuestion(img, img.verify_prompt, 1))
        others = images[i + 1:] + images[:i]
        other = next((o for o in others if o.finding != img.finding), None)
        if other is None:
            continue
        if img.verify_prompt.count(img.finding) != 1:
            raise ValueError(f"{img.id}: the finding must occur once in the verify question")
        questions.append(VerifyQuestion(img, img.verify_prompt.replace(img.finding, other.finding), 0))
    return questions


def parse_box(text: str, width: int, height: int) -> tuple[float, float, float, float] | None:
    """The first Qwen2-VL box in a response, in pixels; None when there is none."""
    m = BOX_RE.search(text)
    if not m:
        return None
    x1, y1, x2, y2 = (int(v) for v in m.groups())
    return (x1 / NORM * width, y1 / NORM * height, x2 / NORM * width, y2 / NORM * height)


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve by the rank-sum formula (ties count half); None without both classes."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def apply_recipe_env(recipe: Path) -> None:
    """Image size limits as in training (the recipe's ENV block), unless already set."""
    env = (yaml.safe_load(recipe.read_text()) or {}).get("ENV") or {}
    for key in ("MAX_PIXELS", "MIN_PIXELS", "IMAGE_MAX_TOKEN_NUM"):
        if key in env:
            os.environ.setdefault(key, str(env[key]))


class Evaluator:
    """Loads the base model once per checkpoint and scores the locate and verify questions."""

    def __init__(self, model_dir: Path, family: str = "qwen2_vl", max_new_tokens: int = 40,
                 batch_size: int = 16) -> None:
        import swift_ext.plugin  # noqa: F401  (registers the med model types and templates)
        from swift import get_model_processor, get_template

        self.model_dir, self.family = model_dir, family
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self._get_model_processor = get_model_processor
        _, processor = get_model_processor(str(model_dir), model_type=f"med_{family}", load_model=False)
        self.template = get_template(processor, template_type=f"med_{family}")
        self.template.set_mode("transformers")
        self.tokenizer = self.template.tokenizer
        self.yes_id = self.template.answer_token_id("yes")
        self.no_id = self.template.answer_token_id("no")

    def load(self, checkpoint: Path | None) -> torch.nn.Module:
        """The base model with the checkpoint's adapter (None: the untrained base)."""
        from peft import PeftModel

        model, _ = self._get_model_processor(str(self.model_dir), model_type=f"med_{self.family}",
                                             torch_dtype=torch.float32)
        if checkpoint is not None:
            model = PeftModel.from_pretrained(model, str(checkpoint))
        model.eval()
        self.template.model = model
        return model

    def _batch(self, rows: list[dict]) -> dict:
        """Encode and collate rows of one user turn (left-padded: the template is not training)."""
        return self.template.data_collator([self.template.encode(r) for r in rows])

    @torch.inference_mode()
    def locate(self, model: torch.nn.Module, images: list[TestImage]) -> list[str]:
        """Greedy answers to the locate prompts, special tokens kept (the box is in them)."""
        answers = []
        for chunk in _chunks(images, self.batch_size):
            batch = self._batch([{"messages": [{"role": "user", "content": img.locate_prompt}],
                                  "images": [img.image]} for img in chunk])
            n_prompt = batch["input_ids"].shape[1]
            out = self.template.generate(model, **batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         pad_token_id=self.tokenizer.pad_token_id)
            sequences = out if isinstance(out, torch.Tensor) else out["sequences"]
            answers += [self._answer(seq[n_prompt:]) for seq in sequences]
        return answers

    def _answer(self, ids: torch.Tensor) -> str:
        ids = ids.tolist()
        if self.tokenizer.pad_token_id in ids:
            ids = ids[:ids.index(self.tokenizer.pad_token_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    @torch.inference_mode()
    def verify_margins(self, model: torch.nn.Module, questions: list[VerifyQuestion]) -> list[float]:
        """logit("yes") - logit("no") as the first answer token, per question."""
        margins = []
        for chunk in _chunks(questions, self.batch_size):
            batch = self._batch([{"messages": [{"role": "user", "content": q.prompt}], "images": [q.image.image],
                                  "objects": q.image.verify_objects} for q in chunk])
            logits = model(**batch, logits_to_keep=1).logits[:, -1]
            margins += (logits[:, self.yes_id] - logits[:, self.no_id]).tolist()
        return margins

    def evaluate(self, checkpoint: Path | None, images: list[TestImage], questions: list[VerifyQuestion],
                 n_examples: int = 3) -> dict:
        """All figures for one checkpoint, plus a few raw locate answers to show what it emits."""
        model = self.load(checkpoint)
        ious, parsed, examples = [], 0, []
        for img, text in zip(images, self.locate(model, images)):
            box = parse_box(text, img.width, img.height)
            parsed += box is not None
            ious.append(box_iou(box, img.true_box) if box else 0.0)
            if len(examples) < n_examples:
                examples.append({"id": img.id, "response": text, "pred_box": box, "true_box": img.true_box})
        margins = self.verify_margins(model, questions)
        labels = [q.label for q in questions]
        correct = [(m > 0) == (y == 1) for m, y in zip(margins, labels)]
        return {
            "iou_mean": sum(ious) / len(ious), "acc_at_0.5": sum(i >= 0.5 for i in ious) / len(ious),
            "parse_rate": parsed / len(images), "n_locate": len(images),
            "verify_acc": sum(correct) / len(correct), "verify_auroc": auroc(margins, labels),
            "verify_yes_rate": sum(m > 0 for m in margins) / len(margins), "n_verify": len(margins),
            "verify_pos_acc": _mean([c for c, y in zip(correct, labels) if y == 1]),
            "verify_neg_acc": _mean([c for c, y in zip(correct, labels) if y == 0]),
            "examples": examples,
        }


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _mean(values: list[bool]) -> float | None:
    return sum(values) / len(values) if values else None
