"""`python -m eval.bench` on each benchmark's release-format fixture against a local fake endpoint.

The fake model answers each question with a chosen text, so every benchmark's metrics.json is
checked against counts worked out by hand; bad data must stop the run with a clear message and
leave the output folder as it was.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eval.bench.__main__ import main as bench_main
from eval.bench.report import write_atomically
from tests.bench_fixtures import IMAGE_TYPE, WRITERS
from tests.conftest import free_port
from tests.fake_openai import FakeServer, completion

# question (as asked) -> what the fake model answers, and whether MedEvalKit's rule counts it right
ANSWERS: dict[str, dict[str, tuple[str, bool]]] = {
    "vqa-rad": {
        "is there evidence of an aortic aneurysm?": ("Yes.", True),
        "is the heart enlarged?": ("Yes, no doubt", False),           # both "yes" and "no" occur
        "what organ is shown?": ("Liver", True),                      # open, exact after lower-casing
        "where is the lesion located?": ("The right upper lobe", False),
        "Is this a CT scan?": ("yes", True),                          # answer "Yes" lower-cased by VQA_RAD
    },
    "slake": {
        "What modality is used to take this image?": ("CT", True),
        "Does the picture contain lung?": ("Yes, it does.", False),   # answer "Yes": exact match needed
        "Does the picture contain heart?": ("No.", True),             # answer "no": the yes/no rule
        "Which organ is abnormal, heart or lung?": ("The heart", False),
        "What is the largest organ in the picture?": ("lung", True),
        "图片中最大的器官是什么?": ("肺", True),
        "这张图片包含肺吗?": ("是。", False),                          # the Chinese full stop is not removed
    },
    "pathvqa": {
        "is there fibrosis?": ("yes", True),
        "does this image show necrosis?": ("no", True),
        "what is present?": ("A granuloma.", False),
        "Is the nucleus enlarged?": ("Yes", True),
    },
    "pmc-vqa": {
        "What is the uptake pattern in the breast?": ("B", True),
        "Which imaging modality was used?": ("", True),               # empty: most-similar fallback picks A
        "Where is the lesion?": ("Answer: D", False),
    },
    "omnimedvqa": {
        "What is the diagnosis?": ("<answer>B</answer>", True),
        "Is this eye normal?": ("No", True),                          # most similar option: "B. No"
        "What imaging modality is this?": ("A", False),
        "Which organ is shown?": ("A", False),                        # gt "Lungs." matches no option: never right
    },
}


def question_of(payload: dict) -> str:
    """The question inside MedEvalKit's prompt (its first line, or the "Question:" line for choices)."""
    text = "".join(c["text"] for c in payload["messages"][0]["content"] if c["type"] == "text")
    if text.startswith("\nQuestion: "):
        return text.split("\n")[1].removeprefix("Question: ")
    return text.split("\n")[0]


@pytest.fixture
def fake_model():
    servers = []

    def start(benchmark: str, fail: set[str] = frozenset()) -> FakeServer:
        def respond(payload: dict) -> tuple[int, dict]:
            question = question_of(payload)
            if question in fail:
                return 400, {"message": "image too large"}
            return completion(ANSWERS[benchmark][question][0])

        servers.append(FakeServer(respond))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def fixture(benchmark: str, tmp_path: Path) -> Path:
    root = tmp_path / benchmark
    root.mkdir()
    return WRITERS[benchmark](root)


def run_bench(benchmark: str, data: Path, out: Path, url: str, *extra: str) -> int:
    return bench_main(["--benchmark", benchmark, "--data", str(data), "--out", str(out), "--url", url,
                       "--concurrency", "3", "--retries", "0", *extra])


def block(total: int, right: int) -> dict:
    return {"total": total, "right": right, "accuracy": right / total}


@pytest.mark.parametrize("benchmark", list(ANSWERS))
def test_each_benchmark_scores_its_fixture(benchmark, fake_model, tmp_path, capsys):
    server = fake_model(benchmark)
    out = tmp_path / "out"
    assert run_bench(benchmark, fixture(benchmark, tmp_path), out, server.url) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    expected = [right for _, right in ANSWERS[benchmark].values()]
    assert metrics["overall"] == block(len(expected), sum(expected))
    assert metrics["headline"]["percent"] == round(100 * sum(expected) / len(expected), 2)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {r["question"]: r["correct"] for r in records} == {q: ok for q, (_, ok) in ANSWERS[benchmark].items()}
    assert [p["model"] for p in metrics["published"]] == ["Qwen2.5-VL-7B", "MedGemma-4B-IT", "Lingshu-7B"]
    assert all("2506.07044" in p["source"] for p in metrics["published"])
    # Every request carried the image first, then MedEvalKit's prompt, with greedy decoding.
    for payload in server.payloads:
        image, text = payload["messages"][0]["content"]
        assert image["image_url"]["url"].startswith("data:image/jpeg;base64,") and text["type"] == "text"
        assert payload["temperature"] == 0.0 and payload["max_tokens"] == 1024
    report = (out / "report.md").read_text()
    assert "| Qwen2.5-VL-7B |" in report and "(this run)" in report
    assert "| **fake-model** (this run) |" in capsys.readouterr().out
    assert not list(out.glob(".*.tmp-*"))


def test_vqa_breakdowns_match_hand_counts(fake_model, tmp_path):
    outs = {}
    for benchmark in ("vqa-rad", "slake", "pathvqa", "omnimedvqa"):
        server = fake_model(benchmark)
        out = tmp_path / f"out-{benchmark}"
        assert run_bench(benchmark, fixture(benchmark, tmp_path), out, server.url) == 0
        outs[benchmark] = json.loads((out / "metrics.json").read_text())
    rad = outs["vqa-rad"]
    assert rad["closed"] == block(3, 2) and rad["open"]["total"] == 2 and rad["open"]["right"] == 1
    assert rad["open"]["em"] == 0.5
    # open answers: "liver" exact (P = R = 1); "the right upper lobe" vs "right lobe" (P 2/4, R 1)
    assert rad["open"]["precision"] == pytest.approx(0.75) and rad["open"]["recall"] == 1.0
    assert "per_modality" not in rad  # the Hugging Face release has no modality field
    slake = outs["slake"]
    assert slake["closed"] == block(4, 1) and slake["open"]["total"] == 3 and slake["open"]["right"] == 3
    assert slake["per_modality"] == {"CT": block(3, 2), "MRI": block(1, 0), "X-Ray": block(3, 2)}
    assert slake["per_language"] == {"en": block(5, 3), "zh": block(2, 1)}
    path = outs["pathvqa"]
    assert path["closed"] == block(3, 3) and path["open"]["total"] == 1 and path["open"]["right"] == 0
    omni = outs["omnimedvqa"]
    assert omni["per_modality"] == {"CT(Computed Tomography)": block(2, 0), "Fundus Photography": block(2, 2)}
    assert omni["per_question_type"] == {"Anatomy Identification": block(1, 0), "Disease Diagnosis": block(2, 2),
                                         "Modality Recognition": block(1, 0)}
    assert any("equals no option" in n for n in omni["run"]["notes"])


def test_prompts_follow_medevalkit_per_benchmark(fake_model, tmp_path):
    server = fake_model("pathvqa")
    assert run_bench("pathvqa", fixture("pathvqa", tmp_path), tmp_path / "o", server.url) == 0
    texts = {question_of(p): p["messages"][0]["content"][1]["text"] for p in server.payloads}
    assert texts["is there fibrosis?"] == "is there fibrosis?\nPlease output 'yes' or 'no'(no extra output)."
    # PATH_VQA picks the prompt from the raw answer ("Yes" is not "yes"), then scores it as closed.
    assert texts["Is the nucleus enlarged?"] == "Is the nucleus enlarged?\nPlease answer the question concisely."
    server = fake_model("pmc-vqa")
    assert run_bench("pmc-vqa", fixture("pmc-vqa", tmp_path), tmp_path / "p", server.url) == 0
    pmc = {question_of(p): p["messages"][0]["content"][1]["text"] for p in server.payloads}
    assert pmc["Which imaging modality was used?"] == (
        "\nQuestion: Which imaging modality was used?\nOptions: \nA:CT\nB:MRI\nC:Ultrasound\nD:PET\n"
        "Answer with the option's letter from the given choices directly.")


def test_failed_requests_count_as_wrong(fake_model, tmp_path):
    server = fake_model("pmc-vqa", fail={"Which imaging modality was used?"})
    out = tmp_path / "out"
    assert run_bench("pmc-vqa", fixture("pmc-vqa", tmp_path), out, server.url) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # the empty answer that the rule would have counted right is now a failed request: wrong
    assert metrics["overall"] == block(3, 1) and metrics["counts"]["request_errors"] == 1
    assert any("HTTP 400: image too large" in n for n in metrics["run"]["notes"])


# --- bad data: a clear message, and the output folder untouched ------------------------------------------

def _drop_slake_image(root: Path) -> str:
    (root / "imgs" / "xmlab13" / "source.jpg").unlink()
    return "image file"


def _unknown_answer_type(root: Path) -> str:
    rows = json.loads((root / "test.json").read_text())
    rows[2]["answer_type"] = "OPEN-ENDED"
    (root / "test.json").write_text(json.dumps(rows))
    return "unknown answer_type 'OPEN-ENDED'"


def _slake_flat_layout(root: Path) -> str:
    (root / "imgs").rename(root / "images")
    return "expected the SLAKE release layout"


def _vqa_rad_without_data_folder(root: Path) -> str:
    for f in (root / "data").glob("*.parquet"):
        f.rename(root / f.name.replace("test-", "eval-"))
    return "no test split found"


def _vqa_rad_broken_image(root: Path) -> str:
    path = next((root / "data").glob("test-*.parquet"))
    table = pq.read_table(path)
    images = table.column("image").to_pylist()
    images[3] = {"bytes": b"not an image", "path": "x.jpg"}
    pq.write_table(table.set_column(0, "image", pa.array(images, type=IMAGE_TYPE)), path)
    return "row 3: the embedded image is not readable"


def _pmc_wrong_header(root: Path) -> str:
    csv_path = root / "test_2.csv"
    csv_path.write_text(csv_path.read_text().replace("Figure_path", "image", 1))
    return "is not PMC-VQA test_2.csv's"


def _pmc_unknown_answer(root: Path) -> str:
    csv_path = root / "test_2.csv"
    csv_path.write_text(csv_path.read_text().replace(",C,test", ",Caudate lobe,test"))
    return "Answer 'Caudate lobe' is not an option letter A-D"


def _omni_missing_modality(root: Path) -> str:
    path = root / "QA_information" / "Open-access" / "Chest CT Scan.json"
    rows = json.loads(path.read_text())
    del rows[0]["modality"]
    path.write_text(json.dumps(rows))
    return "fields ['modality_type'] missing"


def _omni_image_outside_release(root: Path) -> str:
    (root / "Images" / "ACRIMA" / "Im002.jpg").write_text("truncated download")
    return "is not a readable image"


@pytest.mark.parametrize("benchmark,break_it", [
    ("slake", _drop_slake_image), ("slake", _unknown_answer_type), ("slake", _slake_flat_layout),
    ("vqa-rad", _vqa_rad_without_data_folder), ("vqa-rad", _vqa_rad_broken_image),
    ("pmc-vqa", _pmc_wrong_header), ("pmc-vqa", _pmc_unknown_answer),
    ("omnimedvqa", _omni_missing_modality), ("omnimedvqa", _omni_image_outside_release),
])
def test_bad_data_is_reported_and_nothing_is_written(benchmark, break_it, fake_model, tmp_path, capsys):
    server = fake_model(benchmark)
    data, out = fixture(benchmark, tmp_path), tmp_path / "out"
    assert run_bench(benchmark, data, out, server.url) == 0  # a good run first
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    message = break_it(data)
    assert run_bench(benchmark, data, out, server.url) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier outputs, untouched
    assert len(server.payloads) == len(ANSWERS[benchmark])  # the bad run sent nothing


def test_bad_data_is_reported_before_the_server_is_needed(tmp_path, capsys):
    data = fixture("slake", tmp_path)
    _unknown_answer_type(data)
    closed = f"http://127.0.0.1:{free_port()}"
    assert run_bench("slake", data, tmp_path / "out", closed) == 2
    assert "unknown answer_type" in capsys.readouterr().err
    assert run_bench("slake", tmp_path / "missing", tmp_path / "out", closed) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unreachable_server_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert run_bench("pmc-vqa", fixture("pmc-vqa", tmp_path), out, f"http://127.0.0.1:{free_port()}") == 2
    assert capsys.readouterr().err.startswith("error: cannot reach") and not out.exists()


def test_atomic_writer_keeps_old_files_when_a_write_fails(tmp_path):
    out = tmp_path / "out"
    write_atomically(out, {"metrics.json": "old", "report.md": "old"})

    with pytest.raises(TypeError):  # write() of the second file fails after the first was complete
        write_atomically(out, {"metrics.json": "new", "report.md": 123})  # type: ignore[dict-item]
    assert (out / "metrics.json").read_text() == "old" and (out / "report.md").read_text() == "old"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "report.md"]


def test_pmc_header_names_are_checked_where_they_are_read(tmp_path):
    """An unnamed index column (pandas' to_csv) and version 1's "Anwser" spelling still load."""
    from eval.bench.loaders import load

    data = fixture("pmc-vqa", tmp_path)
    csv_path = data / "test_2.csv"
    csv_path.write_text(csv_path.read_text().replace("index,", ",", 1).replace(",Answer,", ",Anwser,", 1))
    assert [item.answer for item in load("pmc-vqa", data, tmp_path / "work").items] == ["B", "A", "C"]
