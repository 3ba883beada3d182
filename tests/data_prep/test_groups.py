"""Group-aware splits: the perceptual hash, near-duplicate linking, group splits, and convert end to end.

Copies of one image (resized, re-encoded, slightly cropped) must never straddle splits, distinct
images must not collapse into one group, explicit group keys win over the hash, and on the bundled
sample the val and test splits must hold only base images that train never sees.
"""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from data_prep import groups
from data_prep.assemble import SplitOptions, group_labels, read_members, write_finals
from data_prep.convert import main as convert
from data_prep.draw import draw_box
from data_prep.groups import DEFAULT_DISTANCE, components, group_key, image_hash, near_pairs, popcount
from data_prep.images import decode
from data_prep.shards import ShardStore
from data_prep.splits import SPLITS, TEST, TRAIN, VAL, fill_empty_splits, group_splits, split_of
from data_prep.synth import write_demo_parquet
from tests.conftest import ROOT

SAMPLE = ROOT / "data" / "sample" / "medtrinity_sample.parquet"
MANIFEST = SAMPLE.parent / "manifest.jsonl"


def bits(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def brute_labels(h: np.ndarray, distance: int) -> np.ndarray:
    d = popcount(h[:, None] ^ h[None, :])
    i, j = np.nonzero(np.triu(d <= distance, 1))
    return components(len(h), i, j)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a.tolist(), b.tolist()))) == len(set(a.tolist())) == len(set(b.tolist()))


# --- linking hashes ---------------------------------------------------------------------------------

def test_hamming_linking_with_hand_made_hashes() -> None:
    a = 0
    b = a ^ 0xFF  # 8 bits from a
    c = b ^ (0xFF << 32)  # 8 bits from b, 16 from a: joined to a only through b
    d = a  # identical to a
    e = 0x0F0F0F0F0F0F0F00  # 28 bits from a, far from all
    f = e ^ (0xFF << 56) ^ 1  # 9 bits from e
    h = np.array([a, b, c, d, e, f], np.uint64)
    assert [bits(e, f), bits(a, c), bits(a, b)] == [9, 16, 8]

    def groups_at(distance: int) -> list[set[int]]:
        labels = components(len(h), *near_pairs(h, distance))
        out: dict[int, set[int]] = defaultdict(set)
        for i, label in enumerate(labels.tolist()):
            out[label].add(i)
        return sorted(out.values(), key=min)

    assert groups_at(8) == [{0, 1, 2, 3}, {4}, {5}], "a-b-c chain joins, e and f stay apart (9 bits)"
    assert groups_at(9) == [{0, 1, 2, 3}, {4, 5}]
    assert groups_at(7) == [{0, 3}, {1}, {2}, {4}, {5}], "below the distance only identical hashes join"
    assert groups_at(0) == [{0, 3}, {1}, {2}, {4}, {5}]


@pytest.mark.parametrize("q", [1, 2, 3, 4])
def test_banded_linking_equals_all_pairs(q: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every band plan finds exactly the groups that comparing all pairs finds."""
    monkeypatch.setattr(groups, "_plan", lambda n, distance: (min(distance + q, 64), q))
    rng = np.random.default_rng(q)
    centres = rng.integers(0, 2**63, size=150, dtype=np.uint64) * np.uint64(2)
    h = centres[rng.integers(0, len(centres), 1500)]
    for _ in range(6):  # clusters of hashes a few bits apart, chained through each other
        flips = np.uint64(1) << rng.integers(0, 64, len(h)).astype(np.uint64)
        h = np.where(rng.random(len(h)) < 0.5, h ^ flips, h)
    for distance in (0, 2, 5, 8, 12):
        labels = components(len(h), *near_pairs(h, distance))
        assert same_partition(labels, brute_labels(h, distance)), distance
    assert len(set(components(len(h), *near_pairs(h, 8)).tolist())) < len(set(h.tolist())), "clusters do join"


def test_union_find_joins_long_chains_in_any_order() -> None:
    n = 1000
    i = np.arange(n - 1)[::-1]  # a path given back to front
    labels = components(n + 3, i, i + 1)
    assert (labels[:n] == 0).all() and labels[n:].tolist() == [n, n + 1, n + 2]


# --- the perceptual hash ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample_bases() -> list[np.ndarray]:
    """One decoded image per source of the bundled sample: 18 unrelated real medical images."""
    table = pq.read_table(SAMPLE).to_pylist()
    manifest = [json.loads(line) for line in MANIFEST.read_text().splitlines()]
    first: dict[str, bytes] = {}
    for row, entry in zip(table, manifest, strict=True):
        first.setdefault(entry["source"], row["image"]["bytes"])
    return [decode(b).rgb for b in first.values()]


def hash_of(rgb: np.ndarray) -> int:
    h = image_hash(rgb)
    assert h is not None
    return h


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return decode(buf.tobytes()).rgb


def resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def crop(rgb: np.ndarray, left: float, top: float, right: float, bottom: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.ascontiguousarray(rgb[int(top * h):h - int(bottom * h), int(left * w):w - int(right * w)])


COPIES = {
    "half size": lambda x: resize(x, 0.5),
    "1.5x size": lambda x: resize(x, 1.5),
    "JPEG q30": lambda x: jpeg(x, 30),
    "JPEG q95": lambda x: jpeg(x, 95),
    "2% cropped per side": lambda x: crop(x, 0.02, 0.02, 0.02, 0.02),
    "2% cropped left, 0.8x, JPEG q60": lambda x: jpeg(resize(crop(x, 0.02, 0, 0, 0), 0.8), 60),
}


def test_copies_of_an_image_hash_within_the_distance(sample_bases: list[np.ndarray]) -> None:
    for name, make in COPIES.items():
        far = [bits(hash_of(x), hash_of(make(x))) for x in sample_bases]
        assert max(far) <= DEFAULT_DISTANCE, (name, far)


def test_distinct_images_stay_apart(sample_bases: list[np.ndarray]) -> None:
    h = np.array([hash_of(x) for x in sample_bases], np.uint64)
    d = popcount(h[:, None] ^ h[None, :])
    np.fill_diagonal(d, 64)
    assert d.min() > DEFAULT_DISTANCE, d.min()
    assert len(set(components(len(h), *near_pairs(h, DEFAULT_DISTANCE)).tolist())) == len(h)


def test_a_drawn_box_does_not_change_the_hash(sample_bases: list[np.ndarray]) -> None:
    """Strokes are left out of the hash, so one image with different boxes drawn on it is one image."""
    moved = []
    for x in sample_bases:
        h, w = x.shape[:2]
        boxed = draw_box(x.copy(), [w // 5, h // 5, w // 5 + w // 4, h // 5 + h // 4], thickness=3)
        moved.append(bits(hash_of(x), hash_of(boxed)))
    assert max(moved) <= DEFAULT_DISTANCE // 2, moved


def test_a_flat_image_has_no_hash() -> None:
    assert image_hash(np.full((64, 64, 3), 120, np.uint8)) is None
    assert image_hash(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)) is not None


def test_group_key_prefers_the_first_filled_field() -> None:
    assert group_key({"study_id": "s1", "patient_id": " p7 "}) == "patient_id=p7"
    assert group_key({"patient_id": "", "study_id": 3}) == "study_id=3"
    assert group_key({"source": "PMC"}) is None, "a dataset name is no group"


# --- splitting groups --------------------------------------------------------------------------------

def test_ratios_hold_over_groups_whatever_their_size() -> None:
    """The split number of a group is that of its canonical member, picked by a hash independent of
    the split hash, so big groups are no likelier to land in test than single images."""
    rng = np.random.default_rng(0)
    sizes = np.where(np.arange(20000) % 2 == 0, 1, 10)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    rank = rng.integers(0, 2**63, len(labels), dtype=np.uint64)
    units = rng.random(len(labels))
    gs = group_splits(labels, rank, units, 0.05, 0.1)
    for size in (1, 10):
        codes = gs.group_codes[sizes == size]
        assert abs((codes == TEST).mean() - 0.1) < 0.015 and abs((codes == VAL).mean() - 0.05) < 0.012, size
    assert all(len(set(gs.codes[labels == g].tolist())) == 1 for g in range(0, 200))
    first = np.flatnonzero(labels == 1)
    canonical = first[np.argmin(rank[first])]
    assert gs.group_codes[1] == (TEST if units[canonical] < 0.1 else VAL if units[canonical] < 0.15 else TRAIN)


def test_empty_splits_get_the_nearest_train_group() -> None:
    units = np.array([0.5, 0.2, 0.97, 0.6, 0.3])
    codes = np.full(5, TRAIN, np.int8)
    assert fill_empty_splits(units, codes, 0.05, 0.05) == ["test", "val"]
    assert codes.tolist() == [TRAIN, VAL, TEST, TRAIN, TRAIN], "test takes the top (wraps to 0), val the lowest"
    two = np.full(2, TRAIN, np.int8)
    assert fill_empty_splits(np.array([0.5, 0.6]), two, 0.05, 0.05) == ["test"] and two.tolist() == [TRAIN, TEST]
    none = np.full(3, TRAIN, np.int8)
    assert fill_empty_splits(np.array([0.5, 0.6, 0.7]), none, 0.0, 0.0) == [] and (none == TRAIN).all()


# --- convert end to end -------------------------------------------------------------------------------

def split_by_id(out: Path) -> dict[str, str]:
    """image id -> split, from the multi-turn files, checking the per-task rows agree."""
    found = {}
    for s in SPLITS:
        for line in (out / f"{s}_multitask.jsonl").read_text().splitlines():
            found[json.loads(line)["id"]] = s
        for line in (out / f"{s}.jsonl").read_text().splitlines():
            row = json.loads(line)
            assert row["split"] == s and found[row["id"]] == s
    return found


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def encode(rgb: np.ndarray, quality: int = 90) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


@pytest.fixture(scope="module")
def copies_parquet(sample_bases: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """12 unrelated images, each with 4 copies, ids interleaved so copies fall into different chunks."""
    caption = "The image is a CT scan of the chest, showing a hypodense lesion in the left region."
    rows, base_of = [], {}
    for k, make in enumerate((lambda x: x, *list(COPIES.values())[:4])):
        for b, x in enumerate(sample_bases[:12]):
            id_ = f"img-{k}-{b:02d}"
            rows.append({"id": id_, "jpeg": encode(make(x)), "caption": caption})
            base_of[id_] = b
    path = tmp_path_factory.mktemp("copies") / "copies.parquet"
    write_demo_parquet(path, rows, row_group=7)
    return path, base_of


def test_near_duplicates_never_straddle_splits(copies_parquet: tuple[Path, dict], tmp_path: Path) -> None:
    path, base_of = copies_parquet
    args = ["--source", str(path), "--workers", "0", "--shard-size", "7", "--val-ratio", "0.25", "--test-ratio", "0.25"]
    assert convert([*args, "--out", str(tmp_path / "g")]) == 0
    splits = split_by_id(tmp_path / "g")
    per_base: dict[int, set[str]] = defaultdict(set)
    for id_, s in splits.items():
        per_base[base_of[id_]].add(s)
    assert len(splits) == len(base_of) and all(len(s) == 1 for s in per_base.values()), per_base
    g = report(tmp_path / "g")["splits"]["groups"]
    assert g["groups"] == 12 and g["hash_groups"] == 12 and g["largest"]["images"] == 5, g
    assert all(n >= 1 for n in g["groups_per_split"].values())
    assert "12 groups" in (tmp_path / "g" / "report.md").read_text()

    assert convert([*args, "--out", str(tmp_path / "id"), "--split-by", "id"]) == 0
    by_id = split_by_id(tmp_path / "id")
    assert all(s == split_of(i, 0.25, 0.25) for i, s in by_id.items())
    assert any(len({by_id[i] for i in base_of if base_of[i] == b}) > 1 for b in range(12)), \
        "split by id, copies do straddle: the grouping is what keeps them together"


def test_split_settings_only_reassemble(copies_parquet: tuple[Path, dict], tmp_path: Path) -> None:
    """Splits are decided when the final files are assembled: other ratios re-split without redoing work."""
    args = ["--source", str(copies_parquet[0]), "--out", str(tmp_path / "o"), "--workers", "0", "--shard-size", "20"]
    assert convert(args) == 0
    assert convert([*args, "--val-ratio", "0.3", "--test-ratio", "0.3"]) == 0
    rep = report(tmp_path / "o")
    assert rep["throughput"]["processed_this_run"] == 0 and rep["throughput"]["resumed_chunks"] == 3
    assert rep["settings"]["val_ratio"] == 0.3
    assert len(split_by_id(tmp_path / "o")) == 60


def write_jsonl_source(root: Path, images: list[np.ndarray], fields: list[dict]) -> Path:
    root.mkdir(parents=True)
    with (root / "captions.jsonl").open("w") as f:
        for k, (rgb, extra) in enumerate(zip(images, fields, strict=True)):
            (root / f"{k}.jpg").write_bytes(encode(rgb))
            f.write(json.dumps({"image": f"{k}.jpg", "id": f"r{k}", "caption": "A CT scan of the chest with a "
                                "hypodense lesion in the left region.", **extra}) + "\n")
    return root


def test_explicit_group_keys_win(sample_bases: list[np.ndarray], tmp_path: Path) -> None:
    """Rows sharing a patient id share a split although their images differ; keyed rows are split by
    their key, never linked by their hash; a --groups file overrides the source's keys."""
    patients = [f"p{k % 8}" for k in range(16)]
    images = [sample_bases[k] for k in range(16)]
    images += [sample_bases[16], jpeg(sample_bases[16], 40)]  # one image under two patients
    patients += ["p-a", "p-b"]
    src = write_jsonl_source(tmp_path / "src", images, [{"patient_id": p} for p in patients])
    out = tmp_path / "out"
    assert convert(["--source", str(src), "--out", str(out), "--workers", "0", "--val-ratio", "0.3",
                    "--test-ratio", "0.3"]) == 0
    splits = split_by_id(out)
    for k, p in enumerate(patients):
        assert splits[f"r{k}"] == split_of(f"patient_id={p}", 0.3, 0.3), (k, p)
    g = report(out)["splits"]["groups"]
    assert g["groups"] == 10 and g["keyed_groups"] == 10 and g["hash_groups"] == 0 and g["images_keyed"] == 18

    side = tmp_path / "families.csv"
    with side.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "family"])
        w.writerows([[f"r{k}", "f1" if k < 9 else "f2"] for k in range(18)])
    assert convert(["--source", str(src), "--out", str(out), "--workers", "0", "--val-ratio", "0.3",
                    "--test-ratio", "0.3", "--groups", str(side), "--group-field", "family"]) == 0
    splits = split_by_id(out)
    assert len({splits[f"r{k}"] for k in range(9)}) == 1 and len({splits[f"r{k}"] for k in range(9, 18)}) == 1
    g = report(out)["splits"]["groups"]
    assert g["groups"] == 2 and g["images_keyed_from_file"] == 18


def test_a_bad_groups_file_fails_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    side = tmp_path / "g.jsonl"
    side.write_text('{"id": "a", "family": "x"}\n')
    args = ["--source", str(SAMPLE), "--out", str(tmp_path / "out"), "--workers", "0", "--groups"]
    assert convert([*args, str(tmp_path / "missing.jsonl")]) == 2
    assert convert([*args, str(side)]) == 2, "no GROUP_FIELDS in the file and no --group-field"
    assert "--group-field" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not SAMPLE.exists(), reason="bundled sample not generated yet")
def test_bundled_sample_test_split_holds_unseen_base_images(tmp_path: Path) -> None:
    """`make data` on the sample: groups from its manifest (one per base image); val and test are
    non-empty and hold only base images train never sees. The hash alone cannot do this on the
    sample: its copies are crops down to 75% per side, flipped, rotated and re-toned, and several
    bases are different slices or frames of one volume. It must still never merge two bases."""
    out = tmp_path / "sample"
    assert convert(["--source", str(SAMPLE), "--out", str(out), "--workers", "2",
                    "--groups", str(MANIFEST), "--group-field", "source"]) == 0
    manifest = {json.loads(line)["id"]: json.loads(line) for line in MANIFEST.read_text().splitlines()}
    splits = split_by_id(out)
    bases = {s: {manifest[i]["source"] for i, t in splits.items() if t == s} for s in SPLITS}
    assert bases["val"] and bases["test"]
    assert not (bases["val"] | bases["test"]) & bases["train"] and not bases["val"] & bases["test"]
    g = report(out)["splits"]["groups"]
    assert g["groups"] == len({m["source"] for m in manifest.values()}) == 18
    assert g["images_keyed_from_file"] == len(manifest)

    store = ShardStore(out)
    count = len(store.done())
    hashed = write_finals(out, store, count, SplitOptions())  # the same shards, split by the hash alone
    labels = group_labels(read_members(store, count), "group", DEFAULT_DISTANCE)
    ids = [json.loads(line)["id"] for i in range(count)
           for line in store.read(i, "members.jsonl").decode().splitlines()]
    sources_per_group: dict[int, set[str]] = defaultdict(set)
    for id_, label in zip(ids, labels.tolist(), strict=True):
        sources_per_group[label].add(manifest[id_]["source"])
    assert all(len(s) == 1 for s in sources_per_group.values()), "the hash merged two base images"
    assert hashed["groups"]["groups"] == len(sources_per_group) > 18
