"""med_qwen2_vl / med_qwen2_5_vl / med_qwen3_vl: swift's Qwen-VL templates plus task spans.

Rendering is untouched (prompts and answers are plain text, so vLLM serves the trained model as
is). In training mode the template also
- annotates each encoded sample (`_encode`): which label tokens answer which task, the verify
  decision token, the finding phrase in the verify question, the report's finding/impression
  tokens (up-weighted);
- turns a share of the batch into verify negatives (`_data_collator`), see swift_ext.negatives;
- hands the annotations to the loss (`compute_sft_loss` attaches them to the model outputs,
  where the `med_multitask` loss reads them).
Rows may hold one task (`"task"`) or a multi-turn conversation (`"tasks"`: one per assistant
turn); train with `--remove_unused_columns false` so those columns reach the template.
Tunables come from environment variables (swift's convention for template options), set in the
recipe's ENV block: MEDVLM_NEGATIVE_RATIO, MEDVLM_NEGATIVE_SEED, MEDVLM_FINDING_WEIGHT,
MEDVLM_SUPERVISED_LOGITS (default on: the LM head runs only where a loss reads it,
swift_ext.logit_positions).
"""
from __future__ import annotations

import random
from typing import Any

import torch
from swift.template import register_template
from swift.template.templates.qwen import Qwen2_5VLTemplate, Qwen2VLTemplate, Qwen3VLTemplate, QwenTemplateMeta
from swift.utils import get_env_args

from medvlm_vocab import IGNORE_INDEX, KEEP_KEY, MED_BATCH_KEYS, NO_TASK, REPORT_LABELS, TASK_IDS
from swift_ext.logit_positions import packed_token_loss, supervised_logits, trim_to_supervised
from swift_ext.loss_type import loss_config_from_env
from swift_ext.negatives import make_negative, negative_modes
from swift_ext.spans import char_spans_to_tokens, find_last, label_runs

_PHRASE_PREFIXES = tuple(f"{REPORT_LABELS[k]}: " for k in ("findings", "impression"))


def phrase_char_spans(report: str) -> list[tuple[int, int]]:
    """Character spans of the finding and impression values in a structured report."""
    spans, pos = [], 0
    for line in report.split("\n"):
        for prefix in _PHRASE_PREFIXES:
            if line.startswith(prefix):
                spans.append((pos + len(prefix), pos + len(line)))
        pos += len(line) + 1
    return spans


class MedTemplateMixin:
    """Task annotations, negatives and the loss hand-off, shared by the three families."""

    def init_env_args(self) -> None:
        super().init_env_args()
        self.negative_ratio = get_env_args("MEDVLM_NEGATIVE_RATIO", float, 0.3)
        self.negative_seed = get_env_args("MEDVLM_NEGATIVE_SEED", int, 0)
        self.finding_weight = loss_config_from_env().finding_weight
        self.supervised_logits = get_env_args("MEDVLM_SUPERVISED_LOGITS", bool, True)
        self._collate_calls = 0

    def answer_token_id(self, word: str) -> int:
        """The single token a verify answer is; the decision loss needs it to be one token."""
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"verify answer {word!r} is {len(ids)} tokens for this tokenizer; it must be one")
        return ids[0]

    def _encode(self, inputs) -> dict[str, Any]:
        encoded = super()._encode(inputs)
        if self.is_training and encoded.get("labels") is not None:
            encoded["med"] = self.annotate(encoded, inputs.extra_kwargs)
        return encoded

    def annotate(self, encoded: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        """Per-position task ids, weights and decision targets, plus the spans negatives need."""
        ids, labels = encoded["input_ids"], encoded["labels"]
        tasks = extra.get("tasks") or [extra.get("task")]
        runs = label_runs(labels)
        if len(runs) != len(tasks) or any(t not in TASK_IDS for t in tasks):
            raise ValueError(f"row {extra.get('id')!r}: {len(runs)} answers but tasks={tasks}; every "
                             "assistant turn needs its task (train with --remove_unused_columns false)")
        task = [NO_TASK] * len(ids)
        weight = [1.0] * len(ids)
        decision = [-1] * len(ids)
        verify_pos, finding = None, None
        prompt_start = 0
        for (start, end), name in zip(runs, tasks):
            task[start:end] = [TASK_IDS[name]] * (end - start)
            if name == "verify":
                verify_pos = start
                decision[start] = self._decision_target(labels[start], extra)
                finding = self._finding_span(ids, prompt_start, start, extra.get("finding"))
            elif name == "diagnose":
                self._weight_phrases(ids[start:end], weight, start)
            prompt_start = end
        image_positions = [i for i, t in enumerate(ids) if t == self.image_token_id]
        finding_text = (extra.get("finding") or "").strip()
        return {
            "task": task, "weight": weight, "decision": decision, "verify_pos": verify_pos,
            "image": (image_positions[0], len(image_positions)) if image_positions else None,
            "finding": finding,
            "finding_ids": ids[finding[0]:finding[1]] if finding else [],
            "finding_key": finding_text.lower() or None,
            "negative": None,
        }

    def _decision_target(self, token: int, extra: dict[str, Any]) -> int:
        if token == self.answer_token_id("yes"):
            return 1
        if token == self.answer_token_id("no"):
            return 0
        raise ValueError(f"row {extra.get('id')!r}: a verify answer must be 'yes' or 'no', "
                         f"got {self.tokenizer.decode([token])!r}")

    def _finding_span(self, ids: list[int], start: int, end: int, finding: str | None) -> tuple[int, int] | None:
        """Token span of the finding phrase inside the verify question, if it tokenizes in place."""
        if not finding:
            return None
        for text in (" " + finding.strip(), finding.strip()):
            needle = self.tokenizer.encode(text, add_special_tokens=False)
            at = find_last(ids, needle, start, end)
            if at >= 0:
                return at, at + len(needle)
        return None

    def _weight_phrases(self, answer_ids: list[int], weight: list[float], offset: int) -> None:
        """Up-weight the report tokens that carry the finding and the impression."""
        special = set(self.tokenizer.all_special_ids)
        texts = ["" if t in special else self.tokenizer.decode([t]) for t in answer_ids]
        spans = phrase_char_spans("".join(texts))
        for k, hit in enumerate(char_spans_to_tokens(texts, spans)):
            if hit:
                weight[offset + k] = self.finding_weight

    def _data_collator(self, batch: list[dict[str, Any]], *, padding_to: int | None = None) -> dict[str, Any]:
        if not (self.is_training and batch and all("med" in b for b in batch)):
            return super()._data_collator(batch, padding_to=padding_to)
        batch = self.add_negatives([dict(b) for b in batch])
        med = [b.pop("med") for b in batch]
        # Before collating: padding_free (and packing) replace `batch` in place by one packed row.
        label_mask = [torch.tensor(b["labels"]) != IGNORE_INDEX for b in batch]
        res = super()._data_collator(batch, padding_to=padding_to)
        res["med_task"] = torch.cat([torch.tensor(m["task"])[k] for m, k in zip(med, label_mask)])
        res["med_weight"] = torch.cat([torch.tensor(m["weight"], dtype=torch.float32)[k] for m, k in zip(med, label_mask)])
        res["med_decision"] = torch.cat([torch.tensor(m["decision"])[k] for m, k in zip(med, label_mask)])
        res["med_sample"] = torch.cat([torch.full((int(k.sum()),), i) for i, k in enumerate(label_mask)])
        if not self.supervised_logits:
            return res
        trimmed = trim_to_supervised(res)
        trimmed[KEEP_KEY] = trimmed.pop("logits_at")
        return trimmed

    def data_collator(self, batch: list[dict[str, Any]], *, padding_to: int | None = None) -> dict[str, Any]:
        """Collate, then drop the row columns (id, tasks, finding, ...) the template already used:
        swift appends them to the batch, and the model's forward must not receive them."""
        res = super().data_collator(batch, padding_to=padding_to)
        if self.is_training:
            for b in batch:
                for key in b.get("_extra_kwargs") or {}:
                    res.pop(key, None)
        return res

    def add_negatives(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replace about negative_ratio of the verify samples by negatives built with a partner.

        The partner is the next sample (cyclically) whose finding differs, so a swap never pairs
        two augmentations of the same finding; its original (positive) version is used.
        """
        rng = random.Random(self.negative_seed * 1_000_003 + self._collate_calls)
        self._collate_calls += 1
        out = list(batch)
        for i, sample in enumerate(batch):
            if sample["med"]["verify_pos"] is None or rng.random() >= self.negative_ratio:
                continue
            for step in range(1, len(batch)):
                partner = batch[(i + step) % len(batch)]
                modes = negative_modes(sample, partner)
                if modes:
                    out[i] = make_negative(sample, partner, rng.choice(modes), no_id=self.answer_token_id("no"),
                                           image_token_id=self.image_token_id)
                    break
        return out

    def compute_sft_loss(self, model, inputs: dict[str, Any], num_items_in_batch=None, trainer=None):
        med = {k: inputs.pop(k) for k in MED_BATCH_KEYS if k in inputs}
        logits_at = inputs.pop(KEEP_KEY, None)
        if logits_at is None:
            outputs = super().compute_sft_loss(model, inputs, num_items_in_batch=num_items_in_batch, trainer=trainer)
        else:
            outputs = supervised_logits(model, inputs, logits_at)
            if "labels" in inputs:  # plain SFT: swift leaves the loss to the model, which saw no labels here
                outputs.loss = packed_token_loss(outputs.logits, inputs["labels"], num_items_in_batch)
        if med:
            outputs["med"] = med
        return outputs


class MedQwen2VLTemplate(MedTemplateMixin, Qwen2VLTemplate):
    pass


class MedQwen2_5VLTemplate(MedTemplateMixin, Qwen2_5VLTemplate):
    pass


class MedQwen3VLTemplate(MedTemplateMixin, Qwen3VLTemplate):
    pass


MED_TEMPLATES = {"med_qwen2_vl": MedQwen2VLTemplate, "med_qwen2_5_vl": MedQwen2_5VLTemplate,
                 "med_qwen3_vl": MedQwen3VLTemplate}


def register_med_templates() -> None:
    """Register the three templates with swift's registry (same metadata as swift's Qwen-VL ones)."""
    register_template(QwenTemplateMeta("med_qwen2_vl", template_cls=MedQwen2VLTemplate), exist_ok=True)
    register_template(QwenTemplateMeta("med_qwen2_5_vl", template_cls=MedQwen2_5VLTemplate), exist_ok=True)
    register_template(QwenTemplateMeta("med_qwen3_vl", template_cls=MedQwen3VLTemplate, default_system=None,
                                       thinking_prefix="<think>\n"), exist_ok=True)
