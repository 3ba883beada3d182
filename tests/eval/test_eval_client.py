"""The eval client against a local OpenAI-style server (stdlib http.server in a thread): retries, no
retry on 4xx, the concurrency bound, and whole runs (eval.run, eval.compare, eval.ask) writing their
files and counting malformed answers. End-to-end runs against vLLM live elsewhere."""
from __future__ import annotations

import base64
import hashlib
import json
import math
from pathlib import Path

import pytest
from PIL import Image

from data_prep.captions import CaptionFields
from data_prep.tasks import DIAGNOSE_PROMPTS, task_rows
from eval import ask, compare
from eval import run as eval_run
from eval.client import ChatClient, ChatRequest, EndpointError, list_models, resolve_model
from eval.family_boxes import render_box, render_ref, to_model_space
from eval.trainlogs import read_curves
from medvlm_vocab import FAMILIES
from tests.conftest import free_port
from tests.fake_openai import FakeServer, Responder, completion

@pytest.fixture
def serve():
    servers = []

    def start(responder: Responder, delay: float = 0.0) -> FakeServer:
        servers.append(FakeServer(responder, delay))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def text_of(payload: dict) -> str:
    return "".join(c["text"] for c in payload["messages"][0]["content"] if c["type"] == "text")


# --- the client ------------------------------------------------------------------------------------

def test_5xx_is_retried_until_it_succeeds(serve):
    calls = []

    def flaky(payload):
        calls.append(1)
        return (503, {"message": "busy"}) if len(calls) < 3 else completion("fine")

    server = serve(flaky)
    [result] = ChatClient(server.url, "m", retries=3, backoff=0.01).run([ChatRequest("k", "hello")])
    assert (result.text, result.error, result.attempts) == ("fine", None, 3)


def test_retries_are_bounded(serve):
    server = serve(lambda p: (500, {"error": {"message": "boom"}}))
    [result] = ChatClient(server.url, "m", retries=2, backoff=0.01).run([ChatRequest("k", "hello")])
    assert result.text is None and result.attempts == 3 and len(server.payloads) == 3
    assert result.error == "HTTP 500: boom"


def test_4xx_is_not_retried(serve):
    server = serve(lambda p: (400, {"message": "`m` is not in the model_list", "object": "error"}))
    [result] = ChatClient(server.url, "m", retries=3, backoff=0.01).run([ChatRequest("k", "hello")])
    assert result.attempts == 1 and len(server.payloads) == 1
    assert result.error == "HTTP 400: `m` is not in the model_list"


def test_connection_errors_are_retried_then_reported():
    [result] = ChatClient(closed_port_url(), "m", retries=2, backoff=0.01).run([ChatRequest("k", "hello")])
    assert result.attempts == 3 and result.text is None and "ConnectError" in result.error


def test_concurrency_is_bounded(serve):
    server = serve(lambda p: completion("ok"), delay=0.05)
    results = ChatClient(server.url, "m", concurrency=3).run([ChatRequest(str(i), "hi") for i in range(12)])
    assert [r.key for r in results] == [str(i) for i in range(12)] and all(r.text == "ok" for r in results)
    assert server.max_in_flight == 3


def test_payload_carries_the_image_and_asks_for_logprobs(serve, tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 6)).save(image)
    server = serve(lambda p: completion("yes", [("yes", -0.1), ("no", -2.4)]))
    [result] = ChatClient(server.url, "fake-model").run(
        [ChatRequest("k", "<image>Is it? Answer yes or no.", (str(image),), max_tokens=1, top_logprobs=5)])
    assert result.top_logprobs == (("yes", -0.1), ("no", -2.4))
    payload = server.payloads[0]
    image_part, text_part = payload["messages"][0]["content"]
    assert image_part["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
    assert text_part == {"type": "text", "text": "Is it? Answer yes or no."}
    assert payload["logprobs"] is True and payload["top_logprobs"] == 5 and payload["max_tokens"] == 1
    assert payload["temperature"] == 0.0 and payload["skip_special_tokens"] is False


def test_model_listing_and_unreachable_server(serve):
    server = serve(lambda p: completion(""))
    assert list_models(server.url + "/v1/") == ["fake-model"]
    assert resolve_model(server.url) == "fake-model"
    with pytest.raises(EndpointError, match="not served"):
        resolve_model(server.url, model="other")
    with pytest.raises(EndpointError, match="cannot reach"):
        list_models(closed_port_url())


# --- whole runs ------------------------------------------------------------------------------------

IMAGES = {  # id: (size, modality, diagnosis, boxes)
    "img-ct-1": ((416, 398), "CT", "pancreatic mass", [[253, 94, 348, 151]]),
    "img-ct-2": ((300, 200), "CT", "renal cyst", [[20, 30, 120, 150], [200, 20, 280, 90]]),
    "img-mri": ((256, 320), "MRI", "meniscal tear", [[100, 100, 180, 220]]),
    "img-xr": ((500, 400), "X-ray", "pneumonia", [[50, 60, 250, 300]]),
}
QWEN2 = FAMILIES["qwen2_vl"]


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, dict]:
    """A data_prep-shaped folder (test.jsonl + images) and, per image hash, what a perfect model answers."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    truth, lines = {}, []
    for n, (id_, (size, modality, diagnosis, boxes)) in enumerate(IMAGES.items()):
        path = data / "images" / f"{id_}.png"
        Image.new("RGB", size, (20 * n, 40, 60)).save(path)
        fields = CaptionFields(modality=modality, organ="body", texture=f"area seen in {id_}", diagnosis=diagnosis)
        rows = task_rows(id=id_, image=str(path), width=size[0], height=size[1], boxes=boxes, fields=fields)
        lines += [json.dumps({**r, "split": "test"}) for r in rows]
        report = next(r for r in rows if r["task"] == "diagnose")["messages"][1]["content"]
        truth[hashlib.sha1(path.read_bytes()).hexdigest()] = {
            "id": id_, "finding": diagnosis, "report": report,
            "boxes": [to_model_space(b, QWEN2, size[0], size[1], None) for b in boxes]}
    (data / "test.jsonl").write_text("\n".join(lines) + "\n")
    return data, truth


def model_answers(truth: dict) -> Responder:
    """A model that is right except: img-mri's locate is garbage, img-xr's report is empty and its
    verify logprobs name no answer, img-ct-2 answers boxes without special tokens (as vLLM strips them)."""
    def respond(payload):
        url = next(c for c in payload["messages"][0]["content"] if c["type"] == "image_url")["image_url"]["url"]
        t = truth[hashlib.sha1(base64.b64decode(url.split(",", 1)[1])).hexdigest()]
        text = text_of(payload)
        if payload.get("logprobs"):
            if t["id"] == "img-xr":
                return completion("maybe", [("maybe", -0.2), ("perhaps", -1.9)])
            p = 0.9 if t["finding"] in text else 0.2
            return completion("yes" if p > 0.5 else "no", [("yes", math.log(p)), ("no", math.log(1 - p))])
        if any(text == prompt.removeprefix("<image>") for prompt in DIAGNOSE_PROMPTS):
            return completion("" if t["id"] == "img-xr" else t["report"])
        if t["id"] == "img-mri":
            return completion("I cannot see a region of interest.")
        if t["id"] == "img-ct-2":
            return completion("\n".join("region of interest({},{}),({},{})".format(*b) for b in t["boxes"]))
        return completion("\n".join(render_ref("region of interest") + render_box(b) for b in t["boxes"]))
    return respond


def write_trainer_log(folder: Path) -> Path:
    run = folder / "v0-20250101-000000"
    run.mkdir(parents=True)
    rows = [{"loss": 3.0 - s / 4, "loss_locate": 2.0 - s / 8, "loss_verify": 0.7 - s / 20, "loss_diagnose": 5.0 - s / 4,
             "weight_locate": 0.5 + s / 100, "weight_verify": 0.5, "weight_diagnose": 0.5 - s / 100,
             "log_var_locate": 0.0, "global_step/max_steps": f"{s}/4"} for s in range(1, 5)]
    rows.append({"train_runtime": 1.0, "loss_locate": 9.9, "global_step/max_steps": "4/4"})
    (run / "logging.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    return folder


def test_run_writes_report_and_counts_malformed(serve, dataset, tmp_path, capsys):
    data, truth = dataset
    server = serve(model_answers(truth))
    out = tmp_path / "run"
    code = eval_run.main(["--url", server.url, "--data", str(data), "--out", str(out), "--no-meteor",
                          "--concurrency", "3", "--train-logs", str(write_trainer_log(tmp_path / "sft")),
                          "--context", "a tiny model on 4 images"])
    assert code == 0, capsys.readouterr().err
    for name in ("metrics.json", "report.md", "predictions.jsonl", "headline.png", "per_modality.png",
                 "gallery.png", "training_curves.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    overall = metrics["overall"]
    assert overall["counts"] == {"images": 4, "locate": 4, "verify_positive": 4, "verify_negative": 4, "diagnose": 4,
                                 "malformed": 4, "request_errors": 0}  # locate 1, report 1, verify pos + neg 2
    assert overall["malformed_rate"] == pytest.approx(4 / 16)
    assert [overall[f"malformed_{t}"] for t in ("locate", "verify", "diagnose")] == [0.25, 0.25, 0.25]
    assert overall["iou_acc50"] == 0.75 and overall["iou_mean"] == pytest.approx(0.75, abs=0.01)
    # Positives 0.9 x3 and (unreadable) 0.5, negatives 0.2 x3 and 0.5: 15 of 16 pairs right, one tie -> 15.5/16.
    assert overall["verify_auroc"] == pytest.approx(15.5 / 16)
    assert overall["verify_accuracy"] == 0.75
    assert overall["report_fields_complete"] == 0.75  # the empty report lacks every field
    assert 0 < overall["bleu_4"] < 100 and overall["meteor"] is None
    assert list(metrics["per_modality"]) == ["CT", "MRI", "X-ray"]
    assert metrics["per_modality"]["MRI"]["iou_mean"] == 0.0 and metrics["per_modality"]["CT"]["iou_mean"] > 0.98
    assert metrics["per_modality"]["CT"]["bleu_4"] == pytest.approx(100.0)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {r["task"] for r in records if r["malformed"]} == {"locate", "verify", "diagnose"}
    report = (out / "report.md").read_text()
    title, _, context = report.splitlines()[:3]
    assert title.startswith("# Evaluation") and context == "**What these numbers mean:** a tiny model on 4 images"
    assert metrics["run"]["context"] == "a tiny model on 4 images"
    assert "![gallery](gallery.png)" in report and "ROI Acc@0.5" in report and "METEOR: skipped (--no-meteor)" in report
    assert "| ROI Acc@0.5 | 0.750 |" in capsys.readouterr().out
    # Every verify prompt went out with the boxes rendered as in training, never as a literal tag.
    assert not any("<bbox>" in text_of(p) for p in server.payloads)

    compare_md = tmp_path / "cmp.md"
    assert compare.main([str(out), str(out / "metrics.json"), "--markdown", str(compare_md), "--per-modality"]) == 0
    printed = capsys.readouterr().out
    assert "| ROI Acc@0.5 | 0.750 | 0.750 | +0.000 |" in printed and "### MRI" in printed
    assert compare_md.read_text().startswith("# run vs metrics.json")


def test_run_fails_clearly_when_the_server_is_down(dataset, tmp_path, capsys):
    data, _ = dataset
    code = eval_run.main(["--url", closed_port_url(), "--data", str(data), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot reach") and "Traceback" not in err


def test_run_fails_clearly_on_missing_data(tmp_path, capsys):
    code = eval_run.main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    code = eval_run.main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert code == 2 and "test.jsonl not found" in capsys.readouterr().err


def test_run_when_every_request_fails(serve, dataset, tmp_path, capsys):
    data, _ = dataset
    server = serve(lambda p: (400, {"message": "bad image"}))
    code = eval_run.main(["--url", server.url, "--data", str(data), "--out", str(tmp_path / "o"), "--limit", "1"])
    assert code == 2 and "every request failed; the first: HTTP 400: bad image" in capsys.readouterr().err


def test_read_curves_skips_the_end_of_run_summary(tmp_path):
    curves = read_curves(write_trainer_log(tmp_path / "sft"))
    assert curves["loss_locate"] == [(s, 2.0 - s / 8) for s in range(1, 5)]  # not the summary's 9.9 at step 4
    assert [step for step, _ in curves["loss"]] == [1, 2, 3, 4]
    assert set(curves) == {"loss", "loss_locate", "loss_verify", "loss_diagnose", "weight_locate", "weight_verify",
                           "weight_diagnose", "log_var_locate"}


def write_metrics(folder: Path, **overall: float) -> str:
    folder.mkdir()
    metrics = {"run": {"model": folder.name, "split": "test"}, "overall": {"counts": {"images": 4}, **overall}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return str(folder)


def test_compare_signs_each_delta_by_the_metric_direction(tmp_path, capsys):
    a = write_metrics(tmp_path / "a", iou_acc50=0.5, malformed_rate=0.25, bleu_4=10.0)
    b = write_metrics(tmp_path / "b", iou_acc50=0.75, malformed_rate=0.5, bleu_4=7.5)
    assert compare.main([a, b]) == 0
    printed = capsys.readouterr().out
    assert "| ROI Acc@0.5 | 0.500 | 0.750 | +0.250 (better) |" in printed
    assert "| Malformed rate | 0.250 | 0.500 | +0.250 (worse) |" in printed  # lower is better
    assert "| BLEU-4 | 10.00 | 7.50 | -2.50 (worse) |" in printed
    assert "| CIDEr | n/a | n/a | n/a |" in printed
    assert compare.main([b, a]) == 0
    printed = capsys.readouterr().out
    assert "| ROI Acc@0.5 | 0.750 | 0.500 | -0.250 (worse) |" in printed
    assert "| Malformed rate | 0.500 | 0.250 | -0.250 (better) |" in printed


def test_compare_reports_a_missing_run(tmp_path, capsys):
    assert compare.main([str(tmp_path), str(tmp_path)]) == 2
    assert "metrics.json not found" in capsys.readouterr().err


@pytest.mark.parametrize("threshold,status", [(0.5, "diagnosis"), (0.95, "needs clinician review")])
def test_ask_runs_the_clinical_flow(serve, dataset, tmp_path, capsys, threshold, status):
    data, truth = dataset
    server = serve(model_answers(truth))
    image = data / "images" / "img-ct-1.png"
    drawn = tmp_path / "boxed.png"
    code = ask.main([str(image), "--url", server.url, "--out", str(drawn), "--threshold", str(threshold)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "fake-model" and result["status"] == status
    assert result["verify_probability"] == pytest.approx(0.9) and result["finding"] == "pancreatic mass"
    assert [round(v) for v in result["boxes"][0]] == [253, 94, 348, 151]
    assert result["diagnosis"] == ("pancreatic mass" if status == "diagnosis" else None)
    assert Image.open(drawn).size == (416, 398)
    tasks = [("logprobs" in p, text_of(p)) for p in server.payloads]
    assert tasks[0][1] == DIAGNOSE_PROMPTS[0].removeprefix("<image>")
    assert tasks[1][1] == "Locate every region of interest in this CT image of the body."
    assert tasks[2][0] and "<|box_start|>(608,236),(837,379)<|box_end|>" in tasks[2][1]


def test_ask_without_a_box_needs_review(serve, dataset, capsys):
    data, truth = dataset
    server = serve(model_answers(truth))
    assert ask.main([str(data / "images" / "img-mri.png"), "--url", server.url]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["boxes"] == [] and result["verify_probability"] is None
    assert result["status"] == "needs clinician review"


def test_sampling_settings_replace_greedy_decoding(serve):
    server = serve(lambda p: completion("ok"))
    ChatClient(server.url, "m", sampling={"temperature": 0.8, "top_p": 0.9}).run([ChatRequest("k", "hi")])
    ChatClient(server.url, "m").run([ChatRequest("k", "hi")])
    sampled, greedy = server.payloads
    assert sampled["temperature"] == 0.8 and sampled["top_p"] == 0.9
    assert greedy["temperature"] == 0.0 and "top_p" not in greedy
