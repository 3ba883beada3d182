"""kill -9 in the middle of a convert, re-run: the result equals a clean run, no row lost or doubled."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from data_prep.convert import main as convert
from data_prep.synth import synthetic_row, write_demo_parquet
from tests.conftest import ROOT

FINAL = ("train.jsonl", "val.jsonl", "test.jsonl", "rois.jsonl")
ROWS, SHARD = 360, 12


def committed(out: Path) -> int:
    shards = out / "shards"
    return sum(p.is_dir() and p.name.isdigit() for p in shards.iterdir()) if shards.is_dir() else 0


def normalised_lines(out: Path) -> dict[str, list[str]]:
    """Final files with the output folder taken out of image paths, so two outputs compare."""
    return {f: (out / f).read_text().replace(str(out), "OUT").splitlines() for f in FINAL}


def test_kill_9_then_rerun_equals_a_clean_run(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    base = [synthetic_row(rng, k, size=(128, 144), n_boxes=k % 2) for k in range(24)]
    src = tmp_path / "in.parquet"
    write_demo_parquet(src, ({**base[k % 24], "id": f"r{k:04d}"} for k in range(ROWS)))

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "data_prep", "convert", "--source", str(src), "--out", str(killed),
           "--workers", "2", "--shard-size", str(SHARD)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while committed(killed) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = committed(killed)
    assert 1 <= at_kill < ROWS // SHARD, f"kill must land mid-run ({at_kill} chunks committed)"
    assert not (killed / "train.jsonl").exists()
    time.sleep(0.3)  # workers die with their parent (PR_SET_PDEATHSIG); give them a moment

    assert convert(["--source", str(src), "--out", str(killed), "--workers", "2", "--shard-size", str(SHARD)]) == 0
    clean = tmp_path / "clean"
    assert convert(["--source", str(src), "--out", str(clean), "--workers", "0", "--shard-size", str(SHARD)]) == 0

    resumed, reference = normalised_lines(killed), normalised_lines(clean)
    assert resumed == reference
    ids = [line.split('"id": "', 1)[1].split('"', 1)[0] for line in resumed["rois.jsonl"]]
    assert len(ids) == ROWS and len(set(ids)) == ROWS
    rows = [json.loads(line) for f in FINAL[:3] for line in resumed[f]]
    per_image = Counter((r["id"], r["task"]) for r in rows)
    assert rows and max(per_image.values()) == 1, "no task row written twice"
    assert {r["id"] for r in rows} <= set(ids)
    images = sorted(p.relative_to(killed) for p in (killed / "images").rglob("*") if p.is_file())
    assert images == sorted(p.relative_to(clean) for p in (clean / "images").rglob("*") if p.is_file())
    assert not [p for p in killed.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]


def test_a_chunk_whose_commit_was_lost_fails_the_run_and_a_rerun_completes_it(tmp_path: Path, monkeypatch,
                                                                              capsys) -> None:
    """Commits run in the background: one that never lands (a worker's last, failing after its
    stats came back) must stop the run before the final files are assembled, and a re-run redoes it."""
    from data_prep import process

    rng = np.random.default_rng(6)
    src = tmp_path / "in.parquet"
    write_demo_parquet(src, (synthetic_row(rng, k, size=(96, 96), n_boxes=1) for k in range(30)))
    args = ["--source", str(src), "--out", str(tmp_path / "out"), "--workers", "0", "--shard-size", "10"]
    real_commit = process.commit_chunk
    monkeypatch.setattr(process, "commit_chunk",
                        lambda index, files, settings: None if index == 1 else real_commit(index, files, settings))
    assert convert(args) == 1
    assert "chunks [1] were processed but not committed" in capsys.readouterr().err
    assert not (tmp_path / "out" / "train.jsonl").exists()
    monkeypatch.setattr(process, "commit_chunk", real_commit)
    assert convert(args) == 0
    rois = (tmp_path / "out" / "rois.jsonl").read_text().splitlines()
    assert len(rois) == 30 and len({json.loads(r)["id"] for r in rois}) == 30
