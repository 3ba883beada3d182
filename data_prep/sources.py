"""Readers for every form MedTrinity-25M comes in, as one stream of Records.

All readers stream: parquet through pyarrow iter_batches with a bounded read buffer, tar.zst
shards through zstandard + tarfile in stream mode, the Hub through datasets' streaming mode.
Rows that cannot be used still come out, with `error` set, so they are counted, never lost
silently. Which reader applies is detected from SRC (open_source). A row that fills one of
groups.GROUP_FIELDS (a patient, study or source-image id) carries it as its explicit group key.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.groups import GROUP_FIELDS, group_key

HF_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
DEMO_COLUMNS = ("id", "image", "caption")
FULL_COLUMNS = ("file_name", "caption")
_BATCH_ROWS = 256
_READ_BUFFER = 8 << 20
_ACCEPTED = (
    "SRC must be one of: the Hugging Face name UCSC-VLAA/MedTrinity-25M; a parquet file or a "
    "folder of parquet shards with columns (id, image, caption) [25M_demo]; a folder with "
    "parquet (file_name, caption, source) plus *.tar.zst image shards or the unpacked images "
    "[25M_full]; a folder (or .jsonl file) of captions JSONL lines "
    '{"image" or "file_name", "caption", optional "id"} beside the images.'
)


class SourceError(Exception):
    """A source that cannot be read; the message says what to do. The CLI exits with code 2."""


@dataclass(frozen=True)
class Record:
    """One input row. The image comes as bytes (`data`) or as a file a worker reads (`path`);
    `group` is its explicit group key ("field=value", see groups.group_key) when the source has one."""
    id: str
    caption: str | None
    source: str | None = None
    data: bytes | None = None
    path: str | None = None
    error: str | None = None
    group: str | None = None


class Source:
    """A stream of Records; `total` is the row count when known without reading the data."""
    kind = "source"
    total: int | None = None

    def records(self) -> Iterator[Record]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind


def open_source(spec: str, *, config: str = "25M_demo", work_dir: Path) -> Source:
    """Pick the reader for SRC: a Hub name, a parquet file/folder, a 25M_full folder or a JSONL folder.

    work_dir holds the caption index a 25M_full tar join needs (kept for resumed runs).
    """
    path = Path(spec).expanduser()
    if not path.exists():
        if HF_NAME.match(spec):
            return HubSource(spec, config)
        raise SourceError(f"{spec}: no such file or folder, and not a Hugging Face dataset name. {_ACCEPTED}")
    if path.is_file():
        if path.suffix == ".parquet":
            return _parquet_source([path], path.parent, work_dir)
        if path.suffix == ".jsonl":
            return JsonlSource([path])
        raise SourceError(f"{spec}: unsupported file type. {_ACCEPTED}")
    parquets = sorted(p for p in path.rglob("*.parquet") if not _hidden(p, path))
    if parquets:
        return _parquet_source(parquets, path, work_dir)
    jsonls = sorted(path.glob("*.jsonl"))
    if jsonls:
        return JsonlSource(jsonls)
    raise SourceError(f"{spec}: found no *.parquet or *.jsonl in this folder. {_ACCEPTED}")


def _hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)


def _columns(path: Path) -> list[str]:
    try:
        return pq.read_schema(path).names
    except Exception as e:
        raise SourceError(f"{path}: not a readable parquet file ({e})") from None


def _parquet_source(files: list[Path], root: Path, work_dir: Path) -> Source:
    names = _columns(files[0])
    if all(c in names for c in DEMO_COLUMNS):
        kind, need = "demo", DEMO_COLUMNS
    elif all(c in names for c in FULL_COLUMNS):
        kind, need = "full", FULL_COLUMNS
    else:
        raise SourceError(f"{files[0]}: columns {names} match neither the 25M_demo schema "
                          f"{list(DEMO_COLUMNS)} nor the 25M_full schema {list(FULL_COLUMNS)} + source")
    for f in files[1:]:
        missing = [c for c in need if c not in _columns(f)]
        if missing:
            raise SourceError(f"{f}: lacks columns {missing} that {files[0].name} has; "
                              "do not mix 25M_demo and 25M_full shards in one folder")
    if kind == "demo":
        return DemoParquetSource(files)
    shards = sorted(p for p in root.rglob("*.tar.zst") if not _hidden(p, root))
    if shards:
        return FullTarSource(files, shards, work_dir)
    return FullFolderSource(files, root)


def _batches(files: list[Path], columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Record batches of a few hundred rows; the read buffer keeps big row groups from loading whole."""
    for f in files:
        pf = pq.ParquetFile(f, buffer_size=_READ_BUFFER, pre_buffer=False)
        cols = [c for c in columns if c in pf.schema_arrow.names]
        yield from pf.iter_batches(batch_size=_BATCH_ROWS, columns=cols, use_threads=False)


def _rows(files: list[Path]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _text(v: object) -> str | None:
    return None if v is None else str(v)


class DemoParquetSource(Source):
    """25M_demo parquet: id, image (HF Image struct {bytes, path}, or plain binary), caption."""
    kind = "parquet (25M_demo schema)"

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.total = _rows(files)

    def describe(self) -> str:
        return f"{self.kind}: {len(self.files)} file(s), {self.total} rows"

    def records(self) -> Iterator[Record]:
        for batch in _batches(self.files, ["id", "image", "caption", "source", *GROUP_FIELDS]):
            image = batch.column("image")
            data = image.field("bytes") if pa.types.is_struct(image.type) else image
            sources = batch.column("source").to_pylist() if "source" in batch.schema.names else None
            groups = _group_keys(batch)
            for i, (id_, raw, caption) in enumerate(zip(batch.column("id").to_pylist(), data.to_pylist(),
                                                        batch.column("caption").to_pylist())):
                yield _record(id_, caption, sources[i] if sources else None, raw, groups[i])


def _group_keys(batch: pa.RecordBatch) -> list[str | None]:
    """The explicit group key of every row of a batch (None where no GROUP_FIELDS column is filled)."""
    cols = {c: batch.column(c).to_pylist() for c in GROUP_FIELDS if c in batch.schema.names}
    return [group_key({c: v[i] for c, v in cols.items()}) for i in range(batch.num_rows)] if cols \
        else [None] * batch.num_rows


def _record(id_: object, caption: object, source: object, raw: bytes | None, group: str | None = None) -> Record:
    if id_ is None or str(id_) == "":
        return Record("", _text(caption), _text(source), error="missing_id")
    return Record(str(id_), _text(caption), _text(source), data=raw,
                  error=None if raw else "missing_image", group=group)


class HubSource(Source):
    """The gated Hub dataset in streaming mode (25M_demo: images embedded in the rows).

    Opening connects and fetches the first row, so access problems surface before any work starts.
    """
    kind = "Hugging Face Hub (streaming)"

    def __init__(self, name: str, config: str) -> None:
        if config != "25M_demo":
            raise SourceError(
                f"--config {config}: only 25M_demo can be streamed from the Hub (25M_full keeps its "
                "images in *.tar.zst shards). Download it, e.g. `huggingface-cli download "
                f"{name} --repo-type dataset --include '{config}/*' --local-dir DIR`, and pass --source DIR.")
        self.name, self.config = name, config
        try:
            import datasets
            ds = datasets.load_dataset(name, config, split="train", streaming=True)
            ds = ds.cast_column("image", datasets.Image(decode=False))
            split = (ds.info.splits or {}).get("train")
            self.total = split.num_examples if split and split.num_examples else None
            self._rows = iter(ds)
            self._first = next(self._rows, None)
        except Exception as e:
            raise SourceError(hub_access_message(name, config, e)) from None

    def describe(self) -> str:
        return f"{self.kind}: {self.name} [{self.config}]"

    def records(self) -> Iterator[Record]:
        n, row = 0, self._first
        while row is not None:
            image = row.get("image") or {}
            raw = image.get("bytes") if isinstance(image, dict) else image
            yield _record(row.get("id"), row.get("caption"), row.get("source"), raw, group_key(row))
            n += 1
            try:
                row = next(self._rows, None)
            except Exception as e:
                raise SourceError(f"lost the Hub stream after {n} rows ({type(e).__name__}: {e}). "
                                  "Committed chunks are kept: re-run the same command to resume.") from None


def hub_access_message(name: str, config: str, err: BaseException) -> str:
    """One message for every way the gated dataset can be out of reach, saying what to do."""
    text = f"{type(err).__name__}: {err}"
    offline = any(os.environ.get(v, "") not in ("", "0", "false") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if offline or "OfflineMode" in text:
        cause = "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
    elif any(k in text for k in ("gated", "401", "403", "Unauthorized", "authenticated", "GatedRepo")):
        cause = "access denied: the dataset is gated and this account has not been granted access"
    elif isinstance(err, ConnectionError) or "reach" in text or "resolve" in text:
        cause = "the Hub cannot be reached (no network?)"
    else:
        cause = text.splitlines()[0][:300]
    return (
        f"cannot read {name} [{config}] from the Hugging Face Hub: {cause}.\n"
        f"It is a gated dataset. Either:\n"
        f"  1. accept its terms at https://huggingface.co/datasets/{name} (while logged in), then\n"
        f"  2. authenticate with `huggingface-cli login` or `export HF_TOKEN=hf_...`, and make sure\n"
        f"     HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are unset; or\n"
        f"  3. download the parquet files elsewhere (`huggingface-cli download {name} --repo-type dataset "
        f"--include '{config}/*' --local-dir DIR`) and pass --source DIR."
    )


class FullFolderSource(Source):
    """25M_full with the image shards unpacked: parquet rows joined to files by file_name.

    Files are looked up as <dir>/<file_name> over the folders (up to 3 levels deep) that hold
    images, most recently matching folder first, so no 25M-entry listing is ever built.
    """
    kind = "25M_full (parquet + unpacked images)"

    def __init__(self, files: list[Path], root: Path) -> None:
        self.files, self.root = files, root
        self.total = _rows(files)
        self.dirs = _image_dirs(root, depth=3)

    def describe(self) -> str:
        return f"{self.kind}: {len(self.files)} parquet file(s), {self.total} rows, {len(self.dirs)} image folder(s)"

    def resolve(self, name: str) -> Path | None:
        for i, d in enumerate(self.dirs):
            p = d / name
            if p.is_file():
                if i:
                    self.dirs.insert(0, self.dirs.pop(i))
                return p
        return None

    def records(self) -> Iterator[Record]:
        for batch in _batches(self.files, ["file_name", "caption", "source", *GROUP_FIELDS]):
            sources = batch.column("source").to_pylist() if "source" in batch.schema.names else None
            groups = _group_keys(batch)
            for i, (name, caption) in enumerate(zip(batch.column("file_name").to_pylist(),
                                                    batch.column("caption").to_pylist())):
                source = _text(sources[i]) if sources else None
                if not name:
                    yield Record("", _text(caption), source, error="missing_id")
                    continue
                p = self.resolve(str(name))
                yield Record(str(name), _text(caption), source, path=str(p) if p else None,
                             error=None if p else "missing_file", group=groups[i])


def _image_dirs(root: Path, depth: int) -> list[Path]:
    """Folders under root (root included, up to `depth` levels) that directly contain an image."""
    found, level = [], [root]
    for _ in range(depth + 1):
        nxt: list[Path] = []
        for d in level:
            has_image = False
            try:
                with os.scandir(d) as entries:  # streamed: a folder may hold millions of files
                    for e in entries:
                        if e.name.startswith("."):
                            continue
                        if e.is_dir():
                            nxt.append(Path(e.path))
                        elif not has_image and Path(e.name).suffix.lower() in IMAGE_SUFFIXES:
                            has_image = True
            except OSError:
                continue
            if has_image:
                found.append(d)
        level = nxt
    return found or [root]


class FullTarSource(Source):
    """25M_full as published: parquet (file_name, caption, source) + images in *.tar.zst shards.

    Shards are streamed in name order and each member is joined to its caption through an
    on-disk SQLite index of the parquet (built once, reused on resume), so memory stays flat.
    Parquet rows whose file never appears in a shard come out last as "missing_file".
    """
    kind = "25M_full (parquet + tar.zst shards)"

    def __init__(self, files: list[Path], shards: list[Path], work_dir: Path) -> None:
        self.files, self.shards = files, shards
        self.total = _rows(files)
        self.index_path = work_dir / "full_captions.sqlite"

    def describe(self) -> str:
        return f"{self.kind}: {len(self.files)} parquet file(s), {self.total} rows, {len(self.shards)} shard(s)"

    def records(self) -> Iterator[Record]:
        index = CaptionIndex(self.index_path, self.files)
        try:
            for shard in self.shards:
                yield from self._shard(shard, index)
            index.flush()
            for name, caption, source in index.unmatched():
                yield Record(name, caption, source, error="missing_file")
            for name in index.duplicates():
                yield Record(name, None, None, error="duplicate_id")
        finally:
            index.close()

    def _shard(self, shard: Path, index: CaptionIndex) -> Iterator[Record]:
        import zstandard
        try:
            with open(shard, "rb") as fh, \
                    zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(fh) as zr, \
                    tarfile.open(fileobj=zr, mode="r|") as tar:
                for member in tar:
                    if not member.isfile() or Path(member.name).suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    f = tar.extractfile(member)
                    data = f.read() if f else None  # before take(): a cut-off member stays unmatched
                    hit = index.take(member.name)
                    if hit is None:
                        yield Record(member.name, None, None, error="no_caption_row")
                    else:
                        name, caption, source, group = hit
                        yield Record(name, caption, source, data=data, error=None if data else "missing_image",
                                     group=group)
        except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError):
            yield Record(f"{shard.name}#archive", None, None, error="corrupt_archive")


class CaptionIndex:
    """file_name -> (caption, source, group key) for the 25M_full join, in SQLite so it never sits in RAM.

    An index built before group keys existed (no `grp` column) is rebuilt.
    """

    def __init__(self, path: Path, files: list[Path]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        built = self.db.execute("SELECT name FROM sqlite_master WHERE name='meta'").fetchone()
        if not built or self.db.execute("SELECT value FROM meta WHERE key='complete'").fetchone() is None \
                or "grp" not in {c[1] for c in self.db.execute("PRAGMA table_info(rows)")}:
            self._build(files)
        self.db.execute("UPDATE rows SET seen=0")
        self._pending = 0

    def _build(self, files: list[Path]) -> None:
        db = self.db
        for t in ("rows", "dups", "meta"):
            db.execute(f"DROP TABLE IF EXISTS {t}")
        db.execute("CREATE TABLE rows (name TEXT PRIMARY KEY, pos INTEGER, caption TEXT, source TEXT, seen INTEGER, "
                   "grp TEXT)")
        db.execute("CREATE TABLE dups (pos INTEGER PRIMARY KEY, name TEXT)")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        pos = 0
        for batch in _batches(files, ["file_name", "caption", "source", *GROUP_FIELDS]):
            names = batch.column("file_name").to_pylist()
            caps = batch.column("caption").to_pylist()
            srcs = batch.column("source").to_pylist() if "source" in batch.schema.names else [None] * len(names)
            for name, cap, src, grp in zip(names, caps, srcs, _group_keys(batch)):
                if name:
                    cur = db.execute("INSERT OR IGNORE INTO rows VALUES (?, ?, ?, ?, 0, ?)",
                                     (str(name), pos, _text(cap), _text(src), grp))
                    if cur.rowcount == 0:
                        db.execute("INSERT INTO dups VALUES (?, ?)", (pos, str(name)))
                pos += 1
        db.execute("INSERT INTO meta VALUES ('complete', ?)", (str(pos),))
        db.commit()

    def take(self, member: str) -> tuple[str, str | None, str | None, str | None] | None:
        """The row (name, caption, source, group key) for a tar member (tried as-is, without './', and
        by base name); marks it seen."""
        for key in dict.fromkeys((member, member.removeprefix("./"), Path(member).name)):
            row = self.db.execute("SELECT name, caption, source, grp FROM rows WHERE name=?", (key,)).fetchone()
            if row:
                self.db.execute("UPDATE rows SET seen=1 WHERE name=?", (key,))
                self._pending += 1
                if self._pending >= 1000:
                    self.flush()
                return row
        return None

    def flush(self) -> None:
        self.db.commit()
        self._pending = 0

    def unmatched(self) -> Iterator[tuple[str, str | None, str | None]]:
        yield from self.db.execute("SELECT name, caption, source FROM rows WHERE seen=0 ORDER BY pos")

    def duplicates(self) -> Iterator[str]:
        for (name,) in self.db.execute("SELECT name FROM dups ORDER BY pos"):
            yield name

    def close(self) -> None:
        self.db.close()


class JsonlSource(Source):
    """Images on disk + captions JSONL: {"image" | "file_name": path relative to the JSONL, "caption", "id"?}."""
    kind = "images + captions JSONL"

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def describe(self) -> str:
        return f"{self.kind}: {', '.join(f.name for f in self.files)}"

    def records(self) -> Iterator[Record]:
        for f in self.files:
            with open(f, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        yield _jsonl_record(line, f, n)


def _jsonl_record(line: str, f: Path, n: int) -> Record:
    try:
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("not an object")
    except ValueError:
        return Record(f"{f.name}:{n}", None, error="bad_json_line")
    image = obj.get("image") or obj.get("file_name")
    id_ = obj.get("id") or image
    if not image:
        return Record(str(id_ or f"{f.name}:{n}"), _text(obj.get("caption")), error="missing_image")
    return Record(str(id_), _text(obj.get("caption")), _text(obj.get("source")), path=str(f.parent / str(image)),
                  group=group_key(obj))
