"""The review package without a browser: uploads, accounts, the locked store, decisions -> DPO rows,
the stats and kappa, asking a (fake) endpoint, and the pairs file through `data_prep pairs --clinician`.

review/app.py itself imports Gradio, which lives in .venv-review; the app is driven in a real browser
by tests/review/test_review_browser.py, and started here only as a subprocess (the refusal to listen off
loopback without a users file).
"""
from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.pairs import PairsFormatError, read_clinician_pairs
from review.decisions import (NO_REGION_ANSWER, answer_key, clean_boxes, comparison_item, comparison_record,
                              correction_row)
from review.images import ImageRejected, read_image, read_upload, window_to_uint8
from review.model import Endpoint, ask_model
from review.stats import agreement, cohens_kappa, summary
from review.store import JUDGEMENTS, PAIRS, append_jsonl, read_jsonl, store_image
from review.users import Authenticator, UsersFileError, add_user, hash_password, load_users, verify_password
from tests.conftest import ROOT
from tests.fake_openai import FakeServer, completion

REVIEW_PY = ROOT / ".venv-review" / "bin" / "python"
REPORT = ("Modality: CT\nOrgan: brain\nRegion: left frontal lobe (about 4.0% of the image)\n"
          "Findings: Hyperdense area with surrounding oedema\nImpression: Acute intracerebral haemorrhage")
LOCATE = "<|object_ref_start|>region of interest<|object_ref_end|><|box_start|>(250,100),(500,400)<|box_end|>"


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def dicom_bytes(stored: np.ndarray, **tags) -> bytes:
    """A minimal CT DICOM file (with preamble) holding `stored` as signed 16-bit pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = stored.astype("<i2").tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# --- images -----------------------------------------------------------------------------------------

def test_dicom_is_shown_in_its_own_window():
    # HU = stored - 1024. Window centre 40, width 400 (LINEAR): <= -160 -> 0, > 239 -> 255,
    # else ((x - 39.5) / 399 + 0.5) * 255: 40 -> 127.8 -> 128, 100 -> 166.2 -> 166.
    hu = np.array([[-200, -160, 40], [100, 239, 300]])
    image = read_image(dicom_bytes(hu + 1024, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40,
                                   WindowWidth=400))
    assert (image.source, image.suffix, image.width, image.height) == ("dicom", ".png", 3, 2)
    assert "window centre 40, width 400" in image.note
    pixels = np.asarray(Image.open(io.BytesIO(image.data)))
    assert pixels.tolist() == [[0, 0, 128], [166, 255, 255]]
    inverted = read_image(dicom_bytes(hu + 1024, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40,
                                      WindowWidth=400, PhotometricInterpretation="MONOCHROME1"))
    assert np.asarray(Image.open(io.BytesIO(inverted.data))).tolist() == [[255, 255, 127], [89, 0, 0]]


def test_dicom_without_a_window_uses_its_full_range_and_real_files_read():
    image = read_image(dicom_bytes(np.array([[0, 50], [100, 200]])))
    assert np.asarray(Image.open(io.BytesIO(image.data))).tolist() == [[0, 64], [128, 255]]
    assert "full range" in image.note
    from pydicom.data import get_testdata_file

    mr = read_image(Path(get_testdata_file("MR_small.dcm")).read_bytes())
    assert (mr.width, mr.height) == (64, 64) and "window centre 600, width 1600" in mr.note


def test_window_functions_follow_the_standard():
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    assert window_to_uint8(x, 0.5, 2, "LINEAR_EXACT").tolist() == [0, 64, 128, 191, 255]
    assert window_to_uint8(np.array([0.5]), 0.5, 2, "SIGMOID").tolist() == [128]


def test_jpeg_and_png_keep_their_bytes_and_other_modes_are_converted():
    jpeg = png_bytes(Image.new("RGB", (40, 30), (90, 20, 20)), "JPEG")
    image = read_image(jpeg)
    assert image.data == jpeg and image.suffix == ".jpg" and (image.width, image.height) == (40, 30)
    rgba = read_image(png_bytes(Image.new("RGBA", (8, 8), (10, 20, 30, 255))))
    assert rgba.suffix == ".png" and Image.open(io.BytesIO(rgba.data)).mode == "RGB"
    grey16 = read_image(png_bytes(Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16))))
    assert np.asarray(Image.open(io.BytesIO(grey16.data))).tolist() == [[0, 64], [128, 255]]


@pytest.mark.parametrize("data,message", [
    (b"%PDF-1.7 this is a report, not a scan", "not an image"),
    (b"", "empty"),
    (png_bytes(Image.new("RGB", (8, 8)), "GIF"), "GIF images are not accepted"),
    (png_bytes(Image.new("RGB", (64, 64)))[:60], "damaged or truncated"),
])
def test_non_images_get_a_clear_message(data, message):
    with pytest.raises(ImageRejected, match=message):
        read_image(data)


def test_uploads_are_bounded_in_bytes_and_pixels(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(Image.new("L", (300, 200))))
    with pytest.raises(ImageRejected, match="the limit is 100"):
        read_upload(big, max_bytes=100)
    with pytest.raises(ImageRejected, match="300x200 = 60000 pixels, the limit is 50000"):
        read_upload(big, max_pixels=50_000)
    with pytest.raises(ImageRejected, match="the limit is 5"):
        read_image(dicom_bytes(np.zeros((2, 3))), max_pixels=5)


# --- accounts ---------------------------------------------------------------------------------------

def test_passwords_are_hashed_and_checked(tmp_path):
    stored = hash_password("correct horse")
    assert "correct horse" not in stored and stored.startswith("scrypt$")
    assert verify_password(stored, "correct horse") and not verify_password(stored, "wrong horse")
    assert hash_password("x" * 8) != hash_password("x" * 8)  # salted
    users = tmp_path / "users.txt"
    add_user(users, "dr_a", "password-a")
    add_user(users, "dr_b", "password-b")
    add_user(users, "dr_a", "password-a2")  # replaced, not duplicated
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    assert "password" not in users.read_text()
    login = Authenticator(load_users(users))
    assert login("dr_a", "password-a2") and login("dr_b", "password-b")
    assert not login("dr_a", "password-a") and not login("nobody", "password-b")


def test_users_file_problems_are_reported(tmp_path):
    with pytest.raises(UsersFileError, match="not found"):
        load_users(tmp_path / "missing.txt")
    plain = tmp_path / "plain.txt"
    plain.write_text("dr_a:hunter22\n")
    with pytest.raises(UsersFileError, match="plain.txt:1: expected"):
        load_users(plain)
    with pytest.raises(UsersFileError, match="at least 8"):
        add_user(tmp_path / "u.txt", "dr_a", "short")


def test_users_cli_reads_the_password_from_stdin(tmp_path):
    users = tmp_path / "users.txt"
    proc = subprocess.run([sys.executable, "-m", "review.users", "add", str(users), "dr_c", "--password-stdin"],
                          cwd=ROOT, input="s3cret-pass\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert Authenticator(load_users(users))("dr_c", "s3cret-pass")


# --- the store --------------------------------------------------------------------------------------

def _writer(path: str, who: str, n: int) -> None:
    for i in range(n):
        append_jsonl(path, {"who": who, "i": i, "pad": "x" * 3000})


def test_two_writers_at_once_lose_nothing(tmp_path):
    path = tmp_path / "pairs.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), who, 200)) for who in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 401  # every line complete, none interleaved
    rows = [json.loads(line) for line in lines[:-1]]
    for who in ("a", "b"):
        assert [r["i"] for r in rows if r["who"] == who] == list(range(200))


def test_append_waits_for_the_lock_and_fsyncs(tmp_path, monkeypatch):
    import fcntl

    path = tmp_path / "pairs.jsonl"
    append_jsonl(path, {"i": 0})
    with path.open("rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another reviewer's save in progress
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from review.store import append_jsonl; "
                                 "append_jsonl(sys.argv[1], {'i': 1})", str(path)], cwd=ROOT)
        time.sleep(1.5)
        assert proc.poll() is None and len(list(read_jsonl(path))) == 1  # blocked on the lock
        fcntl.flock(holder, fcntl.LOCK_UN)
        assert proc.wait(30) == 0
    assert [r["i"] for r in read_jsonl(path)] == [0, 1]
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real_fsync(fd)))
    append_jsonl(path, {"i": 2})
    assert path.stat().st_ino in synced


_KILL_WRITER = """
import sys
from review.store import append_jsonl
i = 0
while True:
    append_jsonl(sys.argv[1], {"i": i, "pad": "y" * 20000})
    i += 1
"""


def test_kill_9_never_leaves_a_torn_line(tmp_path):
    """SIGKILL writers at random moments. A kill inside write() can leave a short write (the kernel stops
    a large write between pages when a fatal signal is pending), so the file may end in a torn tail; every
    terminated line is whole, readers skip the tail, and the next append cuts it (a tail left uncut would
    glue onto the next line, which would then not parse)."""
    path = tmp_path / "pairs.jsonl"
    rng = np.random.default_rng(0)
    for _ in range(8):
        before = path.stat().st_size if path.exists() else 0
        proc = subprocess.Popen([sys.executable, "-c", _KILL_WRITER, str(path)], cwd=ROOT)
        deadline = time.monotonic() + 120
        while (not path.exists() or path.stat().st_size == before) and time.monotonic() < deadline:
            time.sleep(0.01)  # the writer is appending now (its start-up takes long on a busy machine)
        time.sleep(float(rng.uniform(0, 0.2)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        data = path.read_bytes()
        whole = data[:data.rfind(b"\n") + 1].splitlines()
        assert all(json.loads(line)["pad"] == "y" * 20000 for line in whole)
        assert len(list(read_jsonl(path))) == len(whole)
    n = path.read_bytes().count(b"\n")
    assert n >= 8  # at least one line per writer
    with path.open("ab") as f:  # what a writer killed mid-line leaves
        f.write(b'{"i": -1, "pad": "yyyy')
    assert len(list(read_jsonl(path))) == n
    append_jsonl(path, {"i": "after"})
    rows = list(read_jsonl(path))
    assert len(rows) == n + 1 and rows[-1] == {"i": "after"}
    data = path.read_bytes()
    assert data.count(b"\n") == n + 1 and data.endswith(b"\n")
    assert all(json.loads(line) for line in data.splitlines())


def test_images_are_stored_once_by_content_hash(tmp_path):
    image = read_image(png_bytes(Image.new("RGB", (5, 5), (1, 2, 3))))
    first = store_image(tmp_path, image.data, image.sha256, image.suffix)
    second = store_image(tmp_path, image.data, image.sha256, image.suffix)
    assert first == second == tmp_path.resolve() / "images" / image.sha256[:2] / f"{image.sha256}.png"
    assert first.read_bytes() == image.data and len(list((tmp_path / "images").rglob("*"))) == 2


# --- decisions -> rows ------------------------------------------------------------------------------

def make_answer(report: str = REPORT, boxes: list | None = None, model: str = "medvlm", temperature: float = 0.0,
                locate_answer: str = LOCATE) -> dict:
    boxes = [[100.0, 40.0, 200.0, 160.0]] if boxes is None else boxes
    return {"model": model, "size": [400, 400], "boxes": boxes, "report": report, "locate_answer": locate_answer,
            "endpoint": "A", "sampling": {"temperature": temperature, "top_p": 1.0},
            "verify_probability": 0.8, "status": "diagnosis",
            "turns": [{"task": "diagnose", "prompt": "<image>Write a structured report.", "answer": report},
                      {"task": "locate", "prompt": "<image>Locate every region of interest in this CT image "
                                                   "of the brain.", "answer": locate_answer}]}


def test_correction_row_is_a_dpo_pair_with_the_models_answer_rejected(tmp_path):
    answer = make_answer()
    assert correction_row(answer, REPORT + "\n", [[100, 40, 200, 160]], reviewer="dr_a", error_type="",
                          reason="", image="/x.png", image_sha256="ab") is None  # unchanged: no pair
    row = correction_row(answer, REPORT.replace("left", "right"), [[110.4, 40, 210, 160], [5, 5, 50, 60]],
                         reviewer="dr_a", error_type="laterality", reason="wrong side", image="/x.png",
                         image_sha256="ab", time="2026-01-01T00:00:00.000Z")
    assert row["messages"][1]["content"].startswith("Modality: CT") and "right frontal" in row["messages"][1]["content"]
    assert row["messages"][2]["content"] == "Locate every region of interest in this CT image of the brain."
    assert row["messages"][3]["content"] == "<ref-object><bbox>\n<ref-object><bbox>"
    assert row["objects"] == {"ref": ["region of interest"] * 2, "bbox": [[110, 40, 210, 160], [5, 5, 50, 60]],
                              "bbox_type": "real"}
    assert row["rejected_messages"][1]["content"] == REPORT
    assert row["rejected_objects"]["bbox"] == [[100, 40, 200, 160]]
    assert row["messages"][0] == row["rejected_messages"][0] and row["messages"][0]["content"].startswith("<image>")
    assert (row["reviewer"], row["time"], row["model"], row["sampling"]) == \
        ("dr_a", "2026-01-01T00:00:00.000Z", "medvlm", {"temperature": 0.0, "top_p": 1.0})
    assert row["images"] == row["rejected_images"] == ["/x.png"] and row["error_type"] == "laterality"
    with pytest.raises(ValueError, match="box 1"):
        correction_row(answer, REPORT, [[5, 5, 5, 90]], reviewer="dr_a", error_type="", reason="",
                       image="/x.png", image_sha256="ab")


def test_a_model_answer_without_boxes_is_kept_as_its_text():
    answer = make_answer(boxes=[], locate_answer="maybe the <bbox> top<|image_pad|><|im_end|>")
    row = correction_row(answer, REPORT, [[1, 2, 30, 40]], reviewer="r", error_type="", reason="",
                         image="/x.png", image_sha256="ab")
    # literal text, not a swift tag or a special token
    assert row["rejected_messages"][3]["content"] == "maybe the ‹bbox› top‹|image_pad|›‹|im_end|›"
    assert row["rejected_objects"]["bbox"] == [] and row["objects"]["bbox"] == [[1, 2, 30, 40]]
    row = correction_row(make_answer(locate_answer=""), REPORT, [], reviewer="r", error_type="", reason="",
                         image="/x.png", image_sha256="ab")
    assert row["messages"][3]["content"] == NO_REGION_ANSWER


def test_comparison_pairs_and_judgements():
    a, b = make_answer(temperature=0.8), make_answer(REPORT.replace("left", "right"), [[210, 40, 300, 160]], temperature=0.8)
    is_pair, row = comparison_record(a, b, "B", reviewer="dr_b", error_type="laterality", reason="",
                                     image="/x.png", image_sha256="ab")
    assert is_pair and "right frontal" in row["messages"][1]["content"]
    assert row["objects"]["bbox"] == [[210, 40, 300, 160]] and row["rejected_objects"]["bbox"] == [[100, 40, 200, 160]]
    assert row["verdict"] == f"answer:{answer_key(b['report'], [[210, 40, 300, 160]])}"
    assert row["item"] == comparison_item(b, a, "ab")  # order does not matter
    is_pair, tie = comparison_record(a, b, "tie", reviewer="dr_b", error_type="", reason="", image="/x.png",
                                     image_sha256="ab")
    assert not is_pair and tie["verdict"] == "tie" and "messages" not in tie and len(tie["candidates"]) == 2
    with pytest.raises(ValueError, match="error category"):
        comparison_record(a, b, "A", reviewer="r", error_type="", reason="", image="/x.png", image_sha256="ab")
    with pytest.raises(ValueError, match="identical"):
        comparison_record(a, make_answer(), "A", reviewer="r", error_type="vague", reason="", image="/x.png",
                          image_sha256="ab")
    assert clean_boxes([[300, 10, 100, 500]], 400, 400) == [[100, 10, 300, 400]]


def test_every_row_has_the_same_keys():
    a, b = make_answer(), make_answer(REPORT.replace("left", "right"))
    rows = [correction_row(a, "x", [], reviewer="r", error_type="", reason="", image="/x.png", image_sha256="ab"),
            comparison_record(a, b, "A", reviewer="r", error_type="vague", reason="", image="/x.png",
                              image_sha256="ab")[1]]
    assert set(rows[0]) == set(rows[1])
    assert not set(rows[0]) & {"prompt", "query", "response", "chosen", "rejected", "text", "label", "answer"}


# --- stats ------------------------------------------------------------------------------------------

def test_cohens_kappa_hand_computed():
    # 10 items: agree on 7 (4 x, 3 y). Rater 1: x 6, y 4; rater 2: x 5, y 5.
    # p_o = 0.7, p_e = 0.6*0.5 + 0.4*0.5 = 0.5, kappa = 0.2 / 0.5 = 0.4
    r1 = list("xxxxxxyyyy")
    r2 = list("xxxxyyyyyx")
    assert sum(a == b for a, b in zip(r1, r2)) == 7
    assert cohens_kappa(r1, r2) == pytest.approx(0.4)
    assert cohens_kappa(list("ab"), list("ab")) == pytest.approx(1.0)
    assert cohens_kappa(list("ab"), list("ba")) == pytest.approx(-1.0)
    assert cohens_kappa(list("aa"), list("aa")) is None and cohens_kappa([], []) is None


def test_stats_counts_and_agreement(tmp_path):
    a, b = make_answer(temperature=0.8), make_answer(REPORT.replace("left", "right"), temperature=0.8)
    c = make_answer(REPORT.replace("left", "upper"), temperature=0.8)
    # dr_a and dr_b judge the same two items: agree on (a, b) [both prefer a, even though dr_b saw it as B],
    # disagree on (a, c). dr_c judges alone.
    decisions = [
        comparison_record(a, b, "A", reviewer="dr_a", error_type="laterality", reason="", image="/x", image_sha256="i"),
        comparison_record(b, a, "B", reviewer="dr_b", error_type="laterality", reason="", image="/x", image_sha256="i"),
        comparison_record(a, c, "A", reviewer="dr_a", error_type="vague", reason="", image="/x", image_sha256="i"),
        comparison_record(a, c, "tie", reviewer="dr_b", error_type="", reason="", image="/x", image_sha256="i"),
        comparison_record(a, b, "both_wrong", reviewer="dr_c", error_type="", reason="", image="/y", image_sha256="j"),
    ]
    for is_pair, record in decisions:
        append_jsonl(tmp_path / (PAIRS if is_pair else JUDGEMENTS), record)
    append_jsonl(tmp_path / PAIRS, correction_row(a, "y", [], reviewer="dr_c", error_type="other", reason="",
                                                  image="/x", image_sha256="i"))
    rows = [*read_jsonl(tmp_path / PAIRS), *read_jsonl(tmp_path / JUDGEMENTS)]
    # verdicts on the shared items: dr_a [a-wins, a-wins], dr_b [a-wins, tie]: p_o = 0.5,
    # p_e = 1.0 * 0.5 = 0.5 -> kappa 0 / 0.5 = 0.
    [(r1, r2, n, kappa)] = agreement(rows, "verdict")
    assert (r1, r2, n) == ("dr_a", "dr_b", 2) and kappa == pytest.approx(0.0)
    text = summary(rows)
    assert "decisions: 6 (4 DPO pairs)" in text
    assert "dr_a: 2 (comparison 2)" in text and "dr_c: 2 (correction 1, comparison 1)" in text
    assert "laterality: 2" in text and "(none): 2" in text
    assert "dr_a vs dr_b: 2 items, kappa 0.000" in text
    proc = subprocess.run([sys.executable, "-m", "review.stats", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == text


# --- asking the model ---------------------------------------------------------------------------------

def test_ask_model_records_the_turns_reports_progress_and_samples(tmp_path):
    def responder(payload: dict) -> tuple[int, dict]:
        text = payload["messages"][0]["content"][-1]["text"]
        if "yes or no" in text:
            return completion("yes", [("yes", -0.1), ("no", -2.5)])
        return completion(LOCATE if "Locate" in text else REPORT)

    server = FakeServer(responder, model_id="medvlm")
    try:
        image = tmp_path / "scan.png"
        Image.new("RGB", (400, 300), (50, 50, 50)).save(image)
        steps: list[str] = []
        answer = ask_model(str(image), Endpoint("A", server.url), family="qwen2_vl", api_key="k-123",
                           sampling={"temperature": 0.7}, on_step=steps.append)
    finally:
        server.close()
    assert steps == ["diagnose", "locate", "verify"]
    assert [t["task"] for t in answer["turns"]] == steps and answer["turns"][1]["answer"] == LOCATE
    assert answer["boxes"] == [[100.0, 30.0, 200.0, 120.0]] and answer["status"] == "diagnosis"
    assert answer["model"] == "medvlm" and "image" not in answer
    assert all(p["temperature"] == 0.7 for p in server.payloads)
    assert all(h.get("Authorization") == "Bearer k-123" for _, _, h, _ in server.requests)


# --- the pairs file through data_prep pairs --clinician -----------------------------------------------

def test_review_pairs_import_through_data_prep_clinician(tmp_path):
    review_dir = tmp_path / "review"
    image = read_image(png_bytes(Image.new("RGB", (400, 400), (30, 30, 30))))
    path = store_image(review_dir, image.data, image.sha256, image.suffix)
    a, b = make_answer(), make_answer(REPORT.replace("left", "right"), [[210, 40, 300, 160]])
    append_jsonl(review_dir / PAIRS, correction_row(a, REPORT, [[110, 40, 210, 160]], reviewer="dr_a",
                                                    error_type="wrong_region", reason="", image=str(path),
                                                    image_sha256=image.sha256))
    append_jsonl(review_dir / PAIRS, comparison_record(a, b, "B", reviewer="dr_b", error_type="laterality", reason="",
                                                       image=str(path), image_sha256=image.sha256)[1])
    moved = tmp_path / "moved"
    review_dir.rename(moved)  # the absolute paths in the rows no longer exist
    rows = read_clinician_pairs(moved / PAIRS)
    assert [r["rater"] for r in rows] == ["dr_a", "dr_b"]
    assert [r["error_type"] for r in rows] == ["wrong_region", "laterality"]
    assert rows[0]["images"] == [str((moved / path.relative_to(review_dir)).resolve())]
    assert rows[0]["objects"]["bbox"] == [[110, 40, 210, 160]] and rows[1]["source"] == "clinician"
    assert set(rows[0]) == {"id", "source", "error_type", "messages", "images", "rejected_messages",
                            "rejected_images", "objects", "rejected_objects", "rater", "reason"}
    broken = json.loads((moved / PAIRS).read_text().splitlines()[0])
    broken["objects"]["bbox"].append([1, 2, 3, 4])
    broken["rejected_messages"][1]["role"] = "user"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(broken) + "\n")
    with pytest.raises(PairsFormatError) as err:
        read_clinician_pairs(bad, [moved])
    assert "'rejected_messages': message 2 must be a non-empty assistant message" in str(err.value)


def test_the_app_refuses_a_non_loopback_host_without_users(tmp_path):
    if not REVIEW_PY.exists():
        pytest.fail("no .venv-review: run `make setup-review` (make test does)")
    proc = subprocess.run([str(REVIEW_PY), "-m", "review.app", "--host", "0.0.0.0", "--review-dir",
                           str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "without a users file" in proc.stderr
    assert not (tmp_path / "r").exists()
