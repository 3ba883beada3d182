"""Held-out evaluation of a LoRA checkpoint on the lesion task: ROI IoU and verify accuracy.

In-process with swift's own template (so prompts, image tokens and grounding tags are rendered
exactly as in training) and peft for the adapter. Questions are asked where training puts them in
the multi-task conversation (locate -> verify -> diagnose): locate as the first turn, verify as the
next turn after the locate turn with its reference answer. A model trained only on those
conversations has never answered a verify question as a first turn, so asking it there would
measure a distribution shift, not what it learned. Locate is greedy-decoded twice and its box
parsed back to pixels by eval.family_boxes, in the family's coordinates: freely, and held to the box grammar
(the answer's markup forced, each number 1-3 digits), which reads the model's coordinate beliefs even
while it is too unsure of the digits for free greedy decoding to close a box (10 digits share the mass
a delimiter has alone).
Verify is scored from the logits of the first answer token, so a model that always says "yes" shows
up as 50% accuracy with an AUROC that can still rank.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from transformers import LogitsProcessor, LogitsProcessorList

from eval import metrics
from eval.family_boxes import PixelLimits, parse_boxes, pixel_limits, render_box, render_ref, to_image_space
from medvlm_vocab import RESIZED_PIXELS, Family, get_family

MAX_DIGITS = 3  # a coordinate in 0-999 (1000 is the edge itself)
Slot = int | None  # a literal token id of a grounding answer, or None: a number of digit tokens


@dataclass(frozen=True)
class TestImage:
    """One held-out image: its locate prompt, verify question and truth."""
    id: str
    image: str
    width: int
    height: int
    true_box: tuple[float, float, float, float]
    locate_prompt: str
    locate_ref: str  # the object name the reference locate answer grounds
    verify_messages: tuple[dict, ...]  # the conversation up to and including the verify question
    verify_objects: dict  # the grounding objects those messages consume
    finding: str


@dataclass(frozen=True)
class VerifyQuestion:
    image: TestImage
    messages: tuple[dict, ...]
    label: int  # 1: the image's own finding, 0: another image's finding of the other kind


def objects_up_to(messages: Sequence[dict], objects: dict) -> dict:
    """The objects consumed by the <ref-object>/<bbox> tags of `messages` (tags take them in order)."""
    text = "".join(m["content"] for m in messages)
    return {**objects, "ref": objects.get("ref", [])[:text.count("<ref-object>")],
            "bbox": objects.get("bbox", [])[:text.count("<bbox>")]}


def test_image(row: dict, size: tuple[int, int], true_box: Sequence[float]) -> TestImage | None:
    """One multi-task conversation as a test image; None without both a locate and a verify turn."""
    tasks, messages = row["tasks"], row["messages"]
    if "locate" not in tasks or "verify" not in tasks:
        return None
    locate, verify = 2 * tasks.index("locate"), 2 * tasks.index("verify")
    locate_ref = objects_up_to(messages[:locate + 2], row["objects"])["ref"][-1]
    verify_messages = tuple(messages[:verify + 1])
    return TestImage(row["id"], row["images"][0], *size, tuple(true_box), messages[locate]["content"], locate_ref,
                     verify_messages, objects_up_to(verify_messages, row["objects"]), row["finding"])


def image_sizes(rois_jsonl: Path) -> dict[str, tuple[int, int]]:
    """(width, height) per image id, from the converter's ROI file."""
    return {r["id"]: (r["width"], r["height"]) for r in map(json.loads, rois_jsonl.read_text().splitlines())}


def load_test_images(multitask_jsonl: Path, rois_jsonl: Path, truth: dict[str, Sequence[float]]) -> list[TestImage]:
    """The converter's multi-task test conversations; the truth box is the generated lesion's."""
    sizes = image_sizes(rois_jsonl)
    rows = sorted(map(json.loads, multitask_jsonl.read_text().splitlines()), key=lambda r: r["id"])
    images = (test_image(r, sizes[r["id"]], truth[r["id"]]) for r in rows)
    return [img for img in images if img is not None]


def verify_questions(images: list[TestImage]) -> list[VerifyQuestion]:
    """Per image its own finding (yes) and the finding of the next image of the other kind (no)."""
    questions = []
    for i, img in enumerate(images):
        questions.append(VerifyQuestion(img, img.verify_messages, 1))
        others = images[i + 1:] + images[:i]
        other = next((o for o in others if o.finding != img.finding), None)
        if other is None:
            continue
        *history, question = img.verify_messages
        if question["content"].count(img.finding) != 1:
            raise ValueError(f"{img.id}: the finding must occur once in the verify question")
        swapped = {**question, "content": question["content"].replace(img.finding, other.finding)}
        questions.append(VerifyQuestion(img, (*history, swapped), 0))
    return questions


def parse_box(text: str, family: Family, width: int, height: int,
              limits: PixelLimits | None) -> tuple[float, float, float, float] | None:
    """The first box of a response in original-image pixels (eval's parsing and family mapping);
    None when there is none."""
    boxes = parse_boxes(text)
    return to_image_space(boxes[0], family, width, height, limits) if boxes else None


def box_slots(token_ids: Sequence[int], digit_ids: set[int]) -> list[Slot]:
    """The pattern of a tokenized example grounding answer: each run of digit tokens becomes one None."""
    slots: list[Slot] = []
    for tok in token_ids:
        if tok not in digit_ids:
            slots.append(tok)
        elif not slots or slots[-1] is not None:
            slots.append(None)
    return slots


def allowed_next(slots: Sequence[Slot], generated: Sequence[int], digit_ids: set[int]) -> list[int]:
    """Token ids the box grammar allows after `generated`; empty once the pattern is complete.

    A number slot takes 1 to MAX_DIGITS digits and ends with the literal that follows it.
    """
    i, n_digits = 0, 0
    for tok in generated:
        if i >= len(slots):
            return []
        if slots[i] is None and tok in digit_ids:
            n_digits += 1
            continue
        if slots[i] is None:
            i, n_digits = i + 1, 0
        i += 1
    if i >= len(slots):
        return []
    if slots[i] is not None:
        return [slots[i]]
    return (sorted(digit_ids) if n_digits < MAX_DIGITS else []) + ([slots[i + 1]] if n_digits else [])


class BoxGrammar(LogitsProcessor):
    """Masks every token the box grammar of its row does not allow (rows left-padded to n_prompt).

    Where a number may go on or end, the choice is made on probability mass (all digits against the
    delimiter), then the digit by argmax: ten digits split the mass, so a plain argmax would end
    every number at its first uncertain digit.
    """

    def __init__(self, slots: list[list[Slot]], digit_ids: set[int], n_prompt: int) -> None:
        self.slots, self.digit_ids, self.n_prompt = slots, digit_ids, n_prompt

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.zeros_like(scores)
        for row, slots in enumerate(self.slots):
            allowed = allowed_next(slots, input_ids[row, self.n_prompt:].tolist(), self.digit_ids)
            if not allowed:  # a finished row is padded by generate whatever it scores
                continue
            digits = [t for t in allowed if t in self.digit_ids]
            ends = [t for t in allowed if t not in self.digit_ids]
            if digits and ends:
                allowed = digits if scores[row, digits].logsumexp(0) > scores[row, ends].logsumexp(0) else ends
            mask[row] = float("-inf")
            mask[row, allowed] = 0.0
        return scores + mask


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

        self.model_dir, self.family, self.spec = model_dir, family, get_family(family)
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self._get_model_processor = get_model_processor
        _, processor = get_model_processor(str(model_dir), model_type=f"med_{family}", load_model=False)
        self.template = get_template(processor, template_type=f"med_{self.spec.swift_template}")
        self.template.set_mode("transformers")
        self.tokenizer = self.template.tokenizer
        self.yes_id = self.template.answer_token_id("yes")
        self.no_id = self.template.answer_token_id("no")
        self.digit_ids = set(self.tokenizer.convert_tokens_to_ids([str(d) for d in range(10)]))

    def grammar(self, ref: str) -> list[Slot]:
        """The box grammar of an answer grounding `ref`, from how this tokenizer splits one."""
        example = render_ref(ref) + render_box((1, 2, 3, 4))
        ids = self.tokenizer.encode(example, add_special_tokens=False)
        return box_slots(ids, self.digit_ids) + [self.tokenizer.eos_token_id]

    def load(self, checkpoint: Path | None) -> torch.nn.Module:
        """The base model with the checkpoint's adapter (None: the untrained base), or the checkpoint itself
        when it holds a fully fine-tuned model (`tuner_type: full`)."""
        from peft import PeftModel

        full = checkpoint is not None and not (checkpoint / "adapter_config.json").exists()
        model, _ = self._get_model_processor(str(checkpoint if full else self.model_dir),
                                             model_type=f"med_{self.family}", torch_dtype=torch.float32)
        if checkpoint is not None and not full:
            model = PeftModel.from_pretrained(model, str(checkpoint))
        model.eval()
        self.template.model = model
        return model

    def _batch(self, rows: list[dict]) -> dict:
        """Encode and collate rows of one user turn (left-padded: the template is not training)."""
        return self.template.data_collator([self.template.encode(r) for r in rows])

    @torch.inference_mode()
    def locate(self, model: torch.nn.Module, images: list[TestImage], constrained: bool = False) -> list[str]:
        """Greedy answers to the locate prompts, special tokens kept (the box is in them); `constrained`
        holds each answer to the box grammar of its reference object."""
        answers = []
        for chunk in _chunks(images, self.batch_size):
            batch = self._batch([{"messages": [{"role": "user", "content": img.locate_prompt}],
                                  "images": [img.image]} for img in chunk])
            n_prompt = batch["input_ids"].shape[1]
            grammar = BoxGrammar([self.grammar(img.locate_ref) for img in chunk], self.digit_ids, n_prompt)
            out = self.template.generate(model, **batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         pad_token_id=self.tokenizer.pad_token_id,
                                         logits_processor=LogitsProcessorList([grammar] if constrained else []))
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
            batch = self._batch([{"messages": list(q.messages), "images": [q.image.image],
                                  "objects": q.image.verify_objects} for q in chunk])
            logits = model(**batch, logits_to_keep=1).logits[:, -1]
            margins += (logits[:, self.yes_id] - logits[:, self.no_id]).tolist()
        return margins

    def evaluate(self, checkpoint: Path | None, images: list[TestImage], questions: list[VerifyQuestion],
                 n_examples: int = 3) -> dict:
        """All figures for one checkpoint, plus a few raw locate answers to show what it emits."""
        model = self.load(checkpoint)
        free, grammar = self.locate(model, images), self.locate(model, images, constrained=True)
        limits = pixel_limits(self.spec) if self.spec.bbox_space == RESIZED_PIXELS else None
        boxes = [parse_box(text, self.spec, img.width, img.height, limits) for img, text in zip(images, free)]
        grammar_boxes = [parse_box(text, self.spec, img.width, img.height, limits)
                         for img, text in zip(images, grammar)]
        examples = [{"id": img.id, "response": text, "pred_box": box, "grammar_response": g_text,
                     "grammar_box": g_box, "true_box": img.true_box}
                    for img, text, box, g_text, g_box in zip(images, free, boxes, grammar, grammar_boxes)][:n_examples]
        margins = self.verify_margins(model, questions)
        labels = [q.label for q in questions]
        correct = [(m > 0) == (y == 1) for m, y in zip(margins, labels)]
        return {
            **box_scores(boxes, images), **box_scores(grammar_boxes, images, prefix="grammar_"),
            "parse_rate": sum(b is not None for b in boxes) / len(images), "n_locate": len(images),
            "distinct_answers": len(set(free)),  # 1 = a constant box: the image was not read
            "verify_acc": sum(correct) / len(correct), "verify_auroc": metrics.auroc(labels, margins),
            "verify_yes_rate": sum(m > 0 for m in margins) / len(margins), "n_verify": len(margins),
            "verify_pos_acc": metrics.mean([c for c, y in zip(correct, labels) if y == 1]),
            "verify_neg_acc": metrics.mean([c for c, y in zip(correct, labels) if y == 0]),
            "examples": examples,
        }


def box_scores(boxes: Sequence[Sequence[float] | None], images: list[TestImage], prefix: str = "") -> dict:
    """Mean IoU and Acc@0.5 against the truth boxes; a missing box scores IoU 0."""
    ious = [metrics.matched_iou([img.true_box], [box]) if box else 0.0 for box, img in zip(boxes, images)]
    return {f"{prefix}iou_mean": sum(ious) / len(ious), f"{prefix}acc_at_0.5": sum(i >= 0.5 for i in ious) / len(ious)}


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]
