"""The learning ladder's row variants: fixed negatives, the text-only control and verify-only training rows."""
from __future__ import annotations

from bench.learning_ladder import decisions, state_density, swap_finding, variant_rows, verify_only


def conversation(k: int, finding: str) -> dict:
    return {
        "id": f"lesion{k:05d}", "tasks": ["locate", "verify", "diagnose"], "finding": finding,
        "images": [f"/img/{k}.jpg"],
        "messages": [
            {"role": "user", "content": "<image>Locate every region of interest in this CT image of the abdomen."},
            {"role": "assistant", "content": "<ref-object><bbox>"},
            {"role": "user", "content": f"Does the region <bbox> of this CT image of the abdomen show {finding}? "
                                        "Answer yes or no."},
            {"role": "assistant", "content": "yes"},
            {"role": "user", "content": "Give a structured diagnostic report of this image."},
            {"role": "assistant", "content": f"Modality: CT\nImpression: {finding}"},
        ],
        "objects": {"ref": ["region of interest"], "bbox": [[1, 2, 30, 40], [1, 2, 30, 40]], "bbox_type": "real"},
    }


def test_a_fixed_negative_asks_about_the_other_kind_and_answers_no():
    neg = swap_finding(conversation(1, "cyst"))
    assert neg["id"] == "lesion00001-neg" and neg["finding"] == "hemorrhage"
    assert "show hemorrhage?" in neg["messages"][2]["content"] and neg["messages"][3]["content"] == "no"
    assert neg["messages"][5]["content"] == "Modality: CT\nImpression: cyst"  # the report still describes the image


def test_fixed8_is_four_of_each_kind_half_of_them_negative():
    rows = [conversation(k, "cyst" if k % 3 else "hemorrhage") for k in range(20)]
    chosen = variant_rows("fixed8", rows, seed=0)
    assert len(chosen) == 8 and sum(r["id"].endswith("-neg") for r in chosen) == 4
    shown = [r["finding"] if not r["id"].endswith("-neg") else {"cyst": "hemorrhage", "hemorrhage": "cyst"}[r["finding"]]
             for r in chosen]
    assert sorted(shown) == ["cyst"] * 4 + ["hemorrhage"] * 4


def test_the_text_control_states_what_the_image_shows_even_in_a_negative():
    row = swap_finding(conversation(2, "hemorrhage"))
    stated = state_density(row, "hemorrhage")
    assert stated["messages"][2]["content"].startswith("The lesion is hyperdense. Does the region <bbox>")
    assert "show cyst?" in stated["messages"][2]["content"]


def test_verify_only_trains_the_verify_answer_alone():
    row = verify_only(conversation(3, "cyst"))
    assert row["tasks"] == ["verify"] and len(row["messages"]) == 4  # the report turn is left out
    assert row["messages"][1]["loss"] is False and "loss" not in row["messages"][3]
    assert row["objects"]["bbox"] == [[1, 2, 30, 40], [1, 2, 30, 40]]  # both <bbox> tags are still in it


def test_decisions_are_judged_at_the_models_own_threshold():
    assert decisions([2.0, 0.5, -1.0, -0.1], [1, 0, 0, 1]) == {"acc": 0.5, "auroc": 0.75, "yes_rate": 0.5, "n": 4}
