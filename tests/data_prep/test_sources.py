"""Every source kind convert accepts: detection, streaming reads, joins, and the Hub access message."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from data_prep.convert import main as convert
from data_prep.sources import (DemoParquetSource, FullFolderSource, FullTarSource, JsonlSource, SourceError,
                               open_source)
from data_prep.synth import synthetic_row, write_demo_parquet
from tests.conftest import ROOT



@pytest.fixture(scope="module")
def rows() -> list[dict]:
    rng = np.random.default_rng(7)
    return [synthetic_row(rng, k, size=(96, 128)) for k in range(6)]


def full_parquet(path: Path, names: list[str], captions: list[str]) -> None:
    pq.write_table(pa.table({"file_name": names, "caption": captions,
                             "source": [f"src{i % 2}" for i in range(len(names))]}), path)


def tar_zst(path: Path, members: dict[str, bytes]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))


def test_demo_parquet_file_streams_every_row(tmp_path: Path, rows: list[dict]) -> None:
    write_demo_parquet(tmp_path / "d.parquet", rows, row_group=4)
    src = open_source(str(tmp_path / "d.parquet"), work_dir=tmp_path / "w")
    assert isinstance(src, DemoParquetSource) and src.total == len(rows)
    got = list(src.records())
    assert [r.id for r in got] == [r["id"] for r in rows]
    assert [r.data for r in got] == [r["jpeg"] for r in rows]
    assert [r.caption for r in got] == [r["caption"] for r in rows]
    assert all(r.error is None for r in got)


def test_demo_parquet_folder_of_shards_in_name_order(tmp_path: Path, rows: list[dict]) -> None:
    (tmp_path / "25M_demo").mkdir()
    write_demo_parquet(tmp_path / "25M_demo" / "train-00001.parquet", rows[3:])
    write_demo_parquet(tmp_path / "25M_demo" / "train-00000.parquet", rows[:3])
    src = open_source(str(tmp_path), work_dir=tmp_path / "w")
    assert [r.id for r in src.records()] == [r["id"] for r in rows]


def test_demo_row_without_image_bytes_is_reported(tmp_path: Path, rows: list[dict]) -> None:
    write_demo_parquet(tmp_path / "d.parquet", [rows[0], {**rows[1], "jpeg": None}])
    got = list(open_source(str(tmp_path / "d.parquet"), work_dir=tmp_path).records())
    assert [r.error for r in got] == [None, "missing_image"]


def test_full_layout_with_tar_zst_shards(tmp_path: Path, rows: list[dict]) -> None:
    names = [f"{r['id']}.jpg" for r in rows]
    full_parquet(tmp_path / "meta.parquet", names + ["never_shipped.jpg"],
                 [r["caption"] for r in rows] + ["a caption whose image is missing"])
    (tmp_path / "images").mkdir()
    tar_zst(tmp_path / "images" / "part_000.tar.zst", {f"./{n}": r["jpeg"] for n, r in zip(names[:4], rows)})
    tar_zst(tmp_path / "images" / "part_001.tar.zst",
            {**{f"sub/{n}": r["jpeg"] for n, r in zip(names[4:], rows[4:])}, "stray.jpg": rows[0]["jpeg"]})
    src = open_source(str(tmp_path), work_dir=tmp_path / "work")
    assert isinstance(src, FullTarSource)
    got = list(src.records())
    ok = [r for r in got if r.error is None]
    assert [r.id for r in ok] == names
    assert [r.data for r in ok] == [r["jpeg"] for r in rows]
    assert [r.caption for r in ok] == [r["caption"] for r in rows]
    assert ok[1].source == "src1"
    errors = {r.id: r.error for r in got if r.error}
    assert errors == {"never_shipped.jpg": "missing_file", "stray.jpg": "no_caption_row"}
    # the caption index is reused on a second pass (resume) and gives the same stream
    assert [(r.id, r.error) for r in open_source(str(tmp_path), work_dir=tmp_path / "work").records()] == \
        [(r.id, r.error) for r in got]

    out = tmp_path / "out"
    assert convert(["--source", str(tmp_path), "--out", str(out), "--workers", "0"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["skipped"] == {"missing_file": 1, "no_caption_row": 1}
    assert rep["totals"]["images"] == len(rows) and rep["by_source"] == {"src0": 3, "src1": 3}


def test_full_layout_unpacked_folder(tmp_path: Path, rows: list[dict]) -> None:
    names = [f"{r['id']}.jpg" for r in rows]
    full_parquet(tmp_path / "meta.parquet", names, [r["caption"] for r in rows])
    for i, (n, r) in enumerate(zip(names, rows)):
        if i == 2:
            continue  # missing on disk
        d = tmp_path / "unpacked" / f"part_{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        (d / n).write_bytes(r["jpeg"])
    src = open_source(str(tmp_path), work_dir=tmp_path / "w")
    assert isinstance(src, FullFolderSource)
    got = list(src.records())
    assert [r.id for r in got] == names
    assert [r.error for r in got] == [None, None, "missing_file", None, None, None]
    assert Path(got[3].path).read_bytes() == rows[3]["jpeg"]


def test_images_and_captions_jsonl(tmp_path: Path, rows: list[dict]) -> None:
    (tmp_path / "img").mkdir()
    for r in rows[:3]:
        (tmp_path / "img" / f"{r['id']}.jpg").write_bytes(r["jpeg"])
    lines = [{"image": f"img/{rows[0]['id']}.jpg", "caption": rows[0]["caption"], "id": "custom-id"},
             {"file_name": f"img/{rows[1]['id']}.jpg", "caption": rows[1]["caption"]},
             {"caption": "no image field"}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    src = open_source(str(tmp_path), work_dir=tmp_path / "w")
    assert isinstance(src, JsonlSource)
    got = list(src.records())
    assert [r.id for r in got[:2]] == ["custom-id", f"img/{rows[1]['id']}.jpg"]
    assert Path(got[1].path).read_bytes() == rows[1]["jpeg"]
    assert [r.error for r in got] == [None, None, "missing_image", "bad_json_line"]


def test_unrecognised_sources_raise_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "nope"), work_dir=tmp_path)
    pq.write_table(pa.table({"a": [1]}), tmp_path / "odd.parquet")
    with pytest.raises(SourceError, match="match neither"):
        open_source(str(tmp_path / "odd.parquet"), work_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no \\*.parquet"):
        open_source(str(tmp_path / "empty"), work_dir=tmp_path)


def test_hub_offline_gives_one_clear_message_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "data_prep", "convert", "--source", "UCSC-VLAA/MedTrinity-25M",
                           "--out", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert "Traceback" not in err and "Traceback" not in proc.stdout
    assert err.startswith("error: cannot read UCSC-VLAA/MedTrinity-25M")
    for what in ("offline", "accept its terms", "huggingface.co/datasets/UCSC-VLAA/MedTrinity-25M",
                 "huggingface-cli login", "HF_TOKEN", "--source DIR"):
        assert what in err, what
    assert not (tmp_path / "out").exists()


def test_truncated_tar_zst_keeps_the_rows_before_the_damage(tmp_path: Path, rows: list[dict]) -> None:
    names = [f"img{k:03d}.jpg" for k in range(40)]
    full_parquet(tmp_path / "meta.parquet", names, ["caption"] * len(names))
    noise = np.random.default_rng(1).integers(0, 256, (len(names), 8000), np.uint8)  # incompressible
    tar_zst(tmp_path / "part.tar.zst", {n: noise[k].tobytes() for k, n in enumerate(names)})
    blob = (tmp_path / "part.tar.zst").read_bytes()
    (tmp_path / "part.tar.zst").write_bytes(blob[: len(blob) // 2])
    got = list(open_source(str(tmp_path), work_dir=tmp_path / "w").records())
    ok = [r.id for r in got if r.error is None]
    assert ok and ok == names[: len(ok)] and len(ok) < len(names)
    assert [r.error for r in got if r.error] == ["corrupt_archive"] + ["missing_file"] * (len(names) - len(ok))
