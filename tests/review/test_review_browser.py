"""The review app driven in a real headless Chromium (Debian's chromium + chromedriver, via selenium).

1. Against a fake OpenAI endpoint that answers like a trained model (deterministic boxes, so the
   pixel check on the screenshot knows where the red box must be): sign in, upload a DICOM and a
   non-image, upload a CT, ask, check the boxes on a screenshot, correct the box by dragging, drawing
   and typing coordinates, edit the report, save; compare two sampled answers, pick A, save; find
   both decisions in pairs.jsonl, and the API key nowhere in the page.
2. Against the tiny model served by `make serve` (transformers backend): pick an image of the split,
   ask, draw a box into the (box-less) answer, save; compare two samples, pick A, save; then
   `make dpo PAIRS=REVIEW_DIR/pairs.jsonl` runs 2 steps on those pairs.

REVIEW_SCREENSHOTS=docs writes the tab screenshots of run 1 to docs/review-{read,correct,compare}.png.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, free_port, run_make
from tests.fake_openai import FakeServer, completion

REVIEW_PY = ROOT / ".venv-review" / "bin" / "python"
API_KEY = "sk-review-test-7f3a9c"
PASSWORD = "pw-for-dr-a-1"
REPORTS = (
    "Modality: CT\nOrgan: brain\nRegion: left frontal lobe (about 4.0% of the image)\n"
    "Findings: Hyperdense area with surrounding oedema\nImpression: Acute intracerebral haemorrhage",
    "Modality: CT\nOrgan: brain\nRegion: right frontal lobe (about 4.0% of the image)\n"
    "Findings: Hyperdense area with surrounding oedema\nImpression: Acute intracerebral haemorrhage",
)
BOX_1000 = ((300, 250, 520, 480), (560, 300, 760, 520))  # Qwen2-VL answers in 0-1000


def locate_text(box: tuple[int, ...]) -> str:
    return (f"<|object_ref_start|>region of interest<|object_ref_end|>"
            f"<|box_start|>({box[0]},{box[1]}),({box[2]},{box[3]})<|box_end|>")


def fake_model(always: int | None = None) -> Callable[[dict], tuple[int, dict]]:
    """Greedy requests get answer 0; sampled ones alternate 0, 1 per question (two distinct candidates).
    `always`: every request gets that answer (another model)."""
    counts: dict[str, int] = {}

    def responder(payload: dict) -> tuple[int, dict]:
        text = payload["messages"][0]["content"][-1]["text"]
        kind = "verify" if "yes or no" in text else "locate" if "region of interest in this" in text else "report"
        n = counts.get(kind, 0) if payload.get("temperature", 0) > 0 else 0
        n = n if always is None else always
        counts[kind] = counts.get(kind, 0) + (payload.get("temperature", 0) > 0)
        if kind == "verify":
            return completion("yes", [("yes", -0.22), ("no", -1.6)])
        return completion(locate_text(BOX_1000[n % 2]) if kind == "locate" else REPORTS[n % 2])

    return responder


# --- fixtures -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """`make data` on the bundled sample (strokes removed from the images)."""
    out = tmp_path_factory.mktemp("review-data") / "data"
    run_make("data", f"DATA={out}", timeout=600)
    return out


def ct_brain_image(data: Path) -> Path:
    """A CT brain image of the converted sample (the fake answers describe one), from whichever split holds
    one: splits are by source image, so the test split may hold none."""
    for split in ("test", "val", "train"):
        for line in (data / f"{split}.jsonl").open():
            row = json.loads(line)
            if row["fields"].get("modality") == "CT" and row["fields"].get("organ") == "brain":
                return Path(row["images"][0])
    raise AssertionError("no CT brain image in the converted sample")


@pytest.fixture()
def start_app(tmp_path) -> Iterator[Callable[..., str]]:
    """Start `python -m review.app` (in .venv-review) and return its URL; stopped afterwards."""
    if not REVIEW_PY.exists():
        pytest.fail("no .venv-review: run `make setup-review` (make test does)")
    procs: list[subprocess.Popen] = []

    def start(*args: str, env: dict[str, str] | None = None) -> str:
        port = free_port()
        log = (tmp_path / f"app-{port}.log").open("wb")
        proc = subprocess.Popen([str(REVIEW_PY), "-m", "review.app", "--port", str(port), *args], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300  # Gradio's import alone takes ~10 s on an idle 2-core machine
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / f"app-{port}.log").read_text()[-3000:]
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"the review app did not start: {(tmp_path / f'app-{port}.log').read_text()[-3000:]}")

    yield start
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


class Browser:
    """A headless Chromium page with the few gestures the tests need."""

    def __init__(self, shots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
        if not chromium or not driver:
            pytest.fail("chromium / chromedriver missing: `make test` installs them "
                        "(apt-get install chromium chromium-driver)")
        options = Options()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1100", "--force-device-scale-factor=1"):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(options=options, service=Service(driver))
        self.shots = shots
        shots.mkdir(parents=True, exist_ok=True)

    def css(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def wait(self, condition: Callable[[], object], timeout: float = 120, what: str = "") -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = condition()
                if value:
                    return value
            except Exception:  # element not there yet, stale after a re-render
                pass
            time.sleep(0.25)
        self.driver.save_screenshot(str(self.shots / "timeout.png"))
        raise AssertionError(f"timed out waiting for {what} (screenshot {self.shots / 'timeout.png'})")

    def text(self, selector: str) -> str:
        return self.css(selector).text

    def wait_text(self, selector: str, needle: str, timeout: float = 120) -> str:
        return self.wait(lambda: needle in self.text(selector) and self.text(selector), timeout,
                         f"{needle!r} in {selector}")  # type: ignore[return-value]

    def login(self, url: str, user: str, password: str) -> None:
        self.driver.get(url)
        self.wait(lambda: self.css("input[type=password]"), 60, "the login form")
        self.css("input[type=text]").send_keys(user)
        self.css("input[type=password]").send_keys(password + "\n")  # Enter submits the login form
        self.wait(lambda: self.css("#upload input[type=file]"), 60, "the app after login")

    def upload(self, path: Path) -> None:
        self.css("#upload input[type=file]").send_keys(str(path))

    def tab(self, name: str) -> None:
        from selenium.webdriver.common.by import By

        [button] = [b for b in self.driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == name]
        button.click()

    def choose(self, elem_id: str, label: str) -> None:
        """Pick an option of a gr.Dropdown or a gr.Radio by its label."""
        from selenium.webdriver.common.by import By

        if self.driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} input[type=radio]"):
            self.driver.find_element(By.XPATH, f"//*[@id='{elem_id}']//label[contains(., '{label}')]").click()
            return
        if self.css(f"#{elem_id} input").get_attribute("value") == label:
            return
        self.css(f"#{elem_id} input").click()
        option = self.wait(lambda: [o for o in self.driver.find_elements(By.XPATH, "//ul//li")
                                    if o.text.strip().lstrip("✓ ") == label and o.is_displayed()], 20,
                           f"option {label!r}")
        option[0].click()  # type: ignore[index]
        self.wait(lambda: self.css(f"#{elem_id} input").get_attribute("value") == label, 20, f"{label!r} chosen")
        self.wait(lambda: not [o for o in self.driver.find_elements(By.XPATH, "//ul//li") if o.is_displayed()],
                  20, "the option list to close")
        time.sleep(0.5)  # its fade-out, out of the screenshots

    def type_into(self, selector: str, text: str) -> None:
        box = self.css(selector)
        box.clear()
        box.send_keys(text)

    def drag(self, element, start: tuple[int, int], moves: list[tuple[int, int]]) -> None:
        """Press at `start` (offset from the element's centre), move by each offset, release."""
        from selenium.webdriver.common.action_chains import ActionChains

        chain = ActionChains(self.driver).move_to_element_with_offset(element, *start).click_and_hold()
        for dx, dy in moves:
            chain = chain.move_by_offset(dx, dy)
        chain.release().perform()

    def shot(self, name: str) -> Path:
        path = self.shots / name
        self.driver.save_screenshot(str(path))
        return path

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture()
def browser(tmp_path) -> Iterator[Browser]:
    shots = Path(os.environ["REVIEW_SCREENSHOTS"]) if os.environ.get("REVIEW_SCREENSHOTS") else tmp_path / "shots"
    b = Browser(shots if shots.is_absolute() else ROOT / shots)
    yield b
    b.close()


def red_pixels(png: bytes) -> np.ndarray:
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return (rgb[..., 0] > 200) & (rgb[..., 1] < 70) & (rgb[..., 2] < 70)


def rendered_box(element, width: int, height: int, box: tuple[float, ...]) -> tuple[float, ...]:
    """Where an image-pixel box lands in an <img> shown with object-fit: contain."""
    ew, eh = element.size["width"], element.size["height"]
    scale = min(ew / width, eh / height)
    ox, oy = (ew - width * scale) / 2, (eh - height * scale) / 2
    return (ox + box[0] * scale, oy + box[1] * scale, ox + box[2] * scale, oy + box[3] * scale)


def users_file(tmp_path: Path) -> Path:
    from review.users import add_user

    path = tmp_path / "users.txt"
    add_user(path, "dr_a", PASSWORD)
    return path


def editor_rects(b: Browser) -> list[list[int]]:
    from selenium.webdriver.common.by import By

    rects = b.driver.find_elements(By.CSS_SELECTOR, "#box-editor rect.bx-box")
    return [[round(float(r.get_attribute(k))) for k in ("x", "y", "width", "height")] for r in rects]


# --- 1. fake endpoint: the deterministic browser checks -----------------------------------------------------

def test_read_correct_compare_in_a_browser(tmp_path, data, start_app, browser):
    from pydicom.data import get_testdata_file

    started = time.monotonic()
    server = FakeServer(fake_model(), model_id="medvlm", delay=0.5)  # slow enough to see the progress
    # A second endpoint (say the DPO model) that always gives the other answer.
    server_b = FakeServer(fake_model(always=1), model_id="medvlm-dpo")
    review_dir = tmp_path / "review"
    try:
        url = start_app("--url", server.url, "--url-b", server_b.url, "--review-dir", str(review_dir),
                        "--users", str(users_file(tmp_path)), "--data", str(data), env={"MEDVLM_API_KEY": API_KEY})
        b = browser
        b.login(url, "dr_a", PASSWORD)
        b.wait_text("#endpoints", "serving medvlm-dpo", 30)
        assert "Signed in as dr_a" in b.text("#endpoints")

        # Read: a CT, then the model's answer with its box drawn in red.
        image = ct_brain_image(data)
        width, height = Image.open(image).size
        b.upload(image)
        b.wait_text("#image-note", f"{width}x{height} px · JPEG")
        shown = b.css("#read-image img")
        assert red_pixels(shown.screenshot_as_png).sum() == 0  # nothing drawn before the model answers
        b.css("#ask").click()
        b.wait(lambda: "A: locating the region" in b.driver.page_source, 30, "the progress of the questions")
        b.wait_text("#gate", "P(yes) = 0.799")
        assert b.text("#gate").startswith("diagnosis") and "diagnosis: acute intracerebral haemorrhage" in b.text("#gate")
        assert b.css("#report textarea").get_attribute("value") == REPORTS[0]
        time.sleep(0.5)
        shown = b.css("#read-image img")
        red = red_pixels(shown.screenshot_as_png)
        ys, xs = np.nonzero(red)
        box = [v / 1000 * (width if i % 2 == 0 else height) for i, v in enumerate(BOX_1000[0])]
        expected = rendered_box(shown, width, height, box)
        assert red.sum() > 200, red.sum()
        assert max(abs(xs.min() - expected[0]), abs(ys.min() - expected[1]), abs(xs.max() - expected[2]),
                   abs(ys.max() - expected[3])) < 6, ((xs.min(), ys.min(), xs.max(), ys.max()), expected)
        b.shot("review-read.png")

        # Correct: move the model's box, draw a second one, then type exact coordinates for the first.
        b.tab("Correct")
        b.wait(lambda: b.css("#box-editor .bx-svg").is_displayed(), 30, "the box editor")
        model_box = [round(v) for v in box]
        assert b.css("#boxes-text textarea").get_attribute("value") == ", ".join(map(str, model_box))
        b.drag(b.css("#box-editor rect.bx-box"), (0, 0), [(15, 10), (15, 10)])
        moved = b.wait(lambda: (v := b.css("#boxes-text textarea").get_attribute("value")) != ", ".join(
            map(str, model_box)) and v, 20, "the moved box")
        x1, y1, x2, y2 = map(int, str(moved).split(", "))
        assert x1 > model_box[0] and y1 > model_box[1] and x2 - x1 == model_box[2] - model_box[0]
        svg = b.css("#box-editor .bx-svg")
        b.drag(svg, (-int(svg.size["width"] * 0.4), -int(svg.size["height"] * 0.4)), [(30, 25), (30, 25)])
        b.wait(lambda: len(b.css("#boxes-text textarea").get_attribute("value").splitlines()) == 2, 20,
               "the drawn box")
        drawn_box = b.css("#boxes-text textarea").get_attribute("value").splitlines()[1]
        b.type_into("#boxes-text textarea", f"120, 100, 200, 180\n{drawn_box}")
        b.wait(lambda: editor_rects(b)[0] == [120, 100, 80, 80], 20, "the editor following the typed box")
        corrected = REPORTS[0].replace("left frontal", "right frontal")
        b.type_into("#report-edit textarea", corrected)
        b.choose("correct-category", "wrong region")
        b.shot("review-correct.png")
        b.css("#save-correction").click()
        b.wait_text("#correct-status", "Saved correction by dr_a")

        # Compare: two sampled answers (orange / blue), pick A with an error category.
        b.tab("Compare")
        b.choose("compare-mode", "Two samples from A")
        b.css("#compare-ask").click()
        b.wait_text("#compare-note", "Candidates: new answers")
        assert b.css("#report-a textarea").get_attribute("value") == REPORTS[0]
        assert b.css("#report-b textarea").get_attribute("value") == REPORTS[1]
        b.choose("verdict", "A is better")
        b.choose("compare-category", "laterality")
        b.shot("review-compare.png")
        b.css("#save-compare").click()
        b.wait_text("#compare-status", "Saved pair: A by dr_a")
        b.css("#compare-ask").click()  # a second look gets the same two answers (agreement needs them)
        b.wait_text("#compare-note", "the same two answers other reviewers saw")

        # Compare two endpoints, greedy: A (medvlm) against B (medvlm-dpo); pick B.
        b.choose("compare-mode", "A vs B")
        b.type_into("#temperature input[type=number]", "0\n")
        b.css("#compare-ask").click()
        b.wait_text("#compare-note", "Candidates: new answers")
        assert "medvlm-dpo" in b.text("#gate-b") and b.css("#report-b textarea").get_attribute("value") == REPORTS[1]
        b.choose("verdict", "B is better")
        b.choose("compare-category", "laterality")
        b.css("#save-compare").click()
        b.wait_text("#compare-status", "Saved pair: B by dr_a")

        # A DICOM is shown in its own window; a non-image gets a clear message.
        b.tab("Read")
        b.wait(lambda: b.css("#upload input[type=file]"), 30, "an empty upload box")
        b.upload(Path(get_testdata_file("MR_small.dcm")))
        b.wait_text("#image-note", "DICOM MR, window centre 600, width 1600")
        not_image = tmp_path / "notes.txt"
        not_image.write_text("not a scan")
        b.wait(lambda: b.css("#upload input[type=file]"), 30, "an empty upload box")
        b.upload(not_image)
        b.wait_text("#image-note", "Cannot use this file: this file is not an image: upload a JPEG, PNG or DICOM")

        page = b.driver.page_source
        config = b.driver.execute_script("return JSON.stringify(window.gradio_config || {})")
    finally:
        server.close()
        server_b.close()
    assert API_KEY not in page and API_KEY not in config  # sent to the endpoint, never to the page
    assert all(h.get("Authorization") == f"Bearer {API_KEY}" for _, _, h, _ in server.requests)
    temperatures = [p["temperature"] for p in server.payloads]
    assert temperatures == [0.0] * 3 + [0.8] * 6 + [0.0] * 3
    assert [p["temperature"] for p in server_b.payloads] == [0.0] * 3

    rows = [json.loads(line) for line in (review_dir / "pairs.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["decision"], r["reviewer"]) for r in rows] == [
        ("correction", "corrected", "dr_a"), ("comparison", "A", "dr_a"), ("comparison", "B", "dr_a")]
    correction, comparison, endpoints = rows
    assert (endpoints["model"], endpoints["model_b"]) == ("medvlm", "medvlm-dpo")
    assert endpoints["messages"][1]["content"] == REPORTS[1] and endpoints["rejected_messages"][1]["content"] == REPORTS[0]
    drawn = [int(v) for v in drawn_box.split(", ")]
    assert correction["objects"]["bbox"] == [[120, 100, 200, 180], drawn]
    assert correction["rejected_objects"]["bbox"] == [model_box]
    assert correction["messages"][1]["content"] == corrected and correction["error_type"] == "wrong_region"
    assert correction["rejected_messages"][1]["content"] == REPORTS[0]
    assert comparison["messages"][1]["content"] == REPORTS[0]
    assert comparison["rejected_messages"][1]["content"] == REPORTS[1]
    assert comparison["error_type"] == "laterality" and comparison["sampling"]["temperature"] == 0.8
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", comparison["time"])
    stored = Path(correction["images"][0])
    assert stored.read_bytes() == image.read_bytes() and stored.is_relative_to(review_dir.resolve() / "images")
    assert correction["image_sha256"] == stored.stem
    print(f"browser test (fake endpoint): {time.monotonic() - started:.0f} s")


def test_paths_sent_to_the_api_are_never_opened(tmp_path, start_app):
    """A client that skips the page and sends a server-side path (as an upload or as a split pick) gets
    nothing read: the file is a valid PNG, so had it been opened it would be stored under REVIEW_DIR."""
    secret = tmp_path / "secret.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(secret)
    review_dir = tmp_path / "review"
    server = FakeServer(fake_model(), model_id="medvlm")
    try:
        url = start_app("--url", server.url, "--review-dir", str(review_dir))
        for api, value in (("on_upload", {"path": str(secret), "meta": {"_type": "gradio.FileData"}}),
                           ("on_pick", str(secret))):
            event = httpx.post(f"{url}/gradio_api/call/{api}", json={"data": [value]}, timeout=60)
            assert event.status_code == 200, event.text
            stream = httpx.get(f"{url}/gradio_api/call/{api}/{event.json()['event_id']}", timeout=120).text
            assert "32x32 px" not in stream, stream
            assert "event: error" in stream or "Refused" in stream or "Unknown image id" in stream, stream
    finally:
        server.close()
    assert not (review_dir / "images").exists()


# --- 2. the tiny served model, then make dpo on the pairs -------------------------------------------------

@pytest.fixture(scope="module")
def sft_adapter(data, tmp_path_factory, models_dir) -> Path:
    out = tmp_path_factory.mktemp("review-sft")
    run_make("sft", f"DATA={data}", f"OUTPUT={out}", f"MODEL={models_dir / 'tiny-qwen2-vl'}",
             "SFT_ARGS=--max_steps 1 --save_steps 1 --logging_steps 1 --eval_steps 1", timeout=1200)
    return out / "last-checkpoint"


@pytest.fixture(scope="module")
def served(tmp_path_factory, models_dir) -> Iterator[str]:
    """The tiny Qwen2-VL served by `make serve` (transformers backend); `make stop` afterwards."""
    state, port = tmp_path_factory.mktemp("review-serve"), free_port()
    run_make("serve", f"SERVE_MODEL={models_dir / 'tiny-qwen2-vl'}", "BACKEND=transformers", f"PORT={port}",
             f"SERVE_STATE={state}", timeout=900)
    yield f"http://127.0.0.1:{port}"
    run_make("stop", f"SERVE_STATE={state}")


@pytest.mark.slow
def test_review_the_served_tiny_model_then_dpo_on_the_pairs(tmp_path, data, served, sft_adapter, start_app,
                                                            browser, models_dir):
    started = time.monotonic()
    review_dir = tmp_path / "review"
    url = start_app("--url", served, "--review-dir", str(review_dir), "--users", str(users_file(tmp_path)),
                    "--data", str(data), "--serve-recipe", str(ROOT / "recipes/serve/tiny-cpu.yaml"))
    b = browser
    b.login(url, "dr_a", PASSWORD)
    first = json.loads((data / "test.jsonl").open().readline())
    subject = " ".join(v for v in (first["fields"].get("modality"), first["fields"].get("organ")) if v)
    b.choose("pick", f"{first['id'][:8]} {subject}".strip())  # an image of the split, by id
    b.wait_text("#image-note", "px · JPEG")
    b.css("#ask").click()
    b.wait_text("#gate", "verify", timeout=300)
    answered = time.monotonic()

    b.tab("Correct")
    b.wait(lambda: b.css("#box-editor .bx-svg").is_displayed(), 30, "the box editor")
    svg = b.css("#box-editor .bx-svg")
    before = b.css("#boxes-text textarea").get_attribute("value").splitlines()
    b.drag(svg, (-40, -40), [(40, 30), (40, 30)])  # the tiny model rarely gives a box: draw one
    b.wait(lambda: len(b.css("#boxes-text textarea").get_attribute("value").splitlines()) == len(before) + 1,
           20, "the drawn box")
    b.type_into("#report-edit textarea", REPORTS[0])
    b.css("#save-correction").click()
    b.wait_text("#correct-status", "Saved correction by dr_a")

    b.tab("Compare")
    b.css("#temperature input[type=number]").clear()
    b.css("#temperature input[type=number]").send_keys("1.2\n")
    for attempt in range(3):  # random weights at temperature 1.2: two equal answers are unlikely
        b.css("#compare-ask" if attempt == 0 else "#compare-fresh").click()
        note = b.wait_text("#compare-note", "Candidates:", timeout=300)
        if "identical" not in note:
            break
    b.choose("verdict", "A is better")
    b.choose("compare-category", "hallucinated finding")
    b.css("#save-compare").click()
    b.wait_text("#compare-status", "Saved pair: A by dr_a")
    browsed = time.monotonic()

    pairs = review_dir / "pairs.jsonl"
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["correction", "comparison"]
    assert rows[1]["sampling"]["temperature"] == 1.2 and rows[0]["model"] == "medvlm"
    proc = run_make("dpo", f"DATA={data}", f"MODEL={models_dir / 'tiny-qwen2-vl'}", f"SFT_ADAPTER={sft_adapter}",
                    f"PAIRS={pairs}", f"PAIRS_VAL={pairs}", f"DPO_OUTPUT={tmp_path / 'dpo'}",
                    "DPO_ARGS=--max_steps 2 --eval_steps 2 --save_steps 2 --logging_steps 1", timeout=1200)
    assert "held-out pairs: 2" in proc.stdout  # eval.preference_report on the two review pairs
    assert (tmp_path / "dpo" / "checkpoint-2").is_dir()
    print(f"served-model browser test: answer {answered - started:.0f} s, browser {browsed - started:.0f} s, "
          f"with dpo {time.monotonic() - started:.0f} s")
