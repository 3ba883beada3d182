"""The question texts MedEvalKit sends with the image (utils/question_formats.py, REASONING=False).

The wording is part of the measurement: a model asked "Answer with the option's letter" answers
differently from one asked an open question, so the published numbers hold only for these prompts.
"""
from __future__ import annotations

from collections.abc import Sequence

_SUFFIX = {
    "judgement": {"en": "Please output 'yes' or 'no'(no extra output).",
                  "zh": "请输出'是'或'否'(不要有任何其它输出)。"},
    "closed": {"en": "Answer the question using a single word or phrase.", "zh": "请用一个单词或者短语回答该问题。"},
    "open": {"en": "Please answer the question concisely.", "zh": "请简要回答该问题。"},
}
LANGUAGES = ("en", "zh")


def question_prompt(question: str, kind: str, lang: str = "en") -> str:
    """get_judgement_prompt / get_close_ended_prompt / get_open_ended_prompt: the question, a newline,
    and the instruction for `kind` ("judgement", "closed" or "open") in `lang`."""
    return f"{question}\n{_SUFFIX[kind][lang]}"


def choice_prompt(question: str, choices: Sequence[str]) -> str:
    """get_multiple_choice_prompt (English): the choices one per line, as given (PMC-VQA's carry their
    "A:" prefix, OmniMedVQA's are written "A. text" by its loader)."""
    options = "\n".join(str(c) for c in choices)
    return (f"\nQuestion: {question}\nOptions: \n{options}\n"
            "Answer with the option's letter from the given choices directly.")
