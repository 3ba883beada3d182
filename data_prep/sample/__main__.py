"""CLI: python -m data_prep.sample --out data/sample [--rows 240] [--seed 0]"""
from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from data_prep.sample.build import MANIFEST, PARQUET, Settings, build_rows, write_manifest, write_parquet
from data_prep.sample.catalog import SOURCES
from data_prep.sample.contact import contact_sheet, pick_rows
from data_prep.sample.fetch import radiomics_sdist
from data_prep.sample.provenance import sources_markdown
from data_prep.sample.sources import load_frames


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m data_prep.sample", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output folder (data/sample)")
    parser.add_argument("--rows", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", type=int, nargs=2, default=(336, 432), metavar=("MIN", "MAX"),
                        help="range of the output long side in px (multiples of 16)")
    parser.add_argument("--jpeg-quality", type=int, nargs=2, default=(50, 55), metavar=("MIN", "MAX"))
    parser.add_argument("--strokes", type=int, nargs=2, default=(1, 4), metavar=("MIN", "MAX"),
                        help="range of the box stroke width in px")
    parser.add_argument("--min-box", type=int, default=14, help="smallest box side in px")
    parser.add_argument("--max-rotation", type=float, default=6.0, help="degrees")
    parser.add_argument("--two-box-share", type=float, default=0.1, help="share of rows with two boxes")
    parser.add_argument("--radiomics-sdist", type=Path, default=None,
                        help="pyradiomics sdist tarball; default: pip-download it into --cache-dir")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "medvlm-sample")
    parser.add_argument("--contact-sheet", type=Path, default=None,
                        help="also write a PNG with one row of each source here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    settings = Settings(rows=args.rows, seed=args.seed, sizes=tuple(args.sizes), quality=tuple(args.jpeg_quality),
                        strokes=tuple(args.strokes), min_box=args.min_box, max_angle=args.max_rotation,
                        two_box_share=args.two_box_share)
    sdist = radiomics_sdist(args.radiomics_sdist, args.cache_dir)
    frames = [load_frames(spec, sdist) for spec in SOURCES]
    rows = build_rows(frames, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    write_parquet(rows, args.out / PARQUET)
    write_manifest(rows, args.out / MANIFEST)
    counts = Counter(row.manifest["source"] for row in rows)
    command = (f"python -m data_prep.sample --out DIR --rows {args.rows} --seed {args.seed} "
               f"--sizes {settings.sizes[0]} {settings.sizes[1]} "
               f"--jpeg-quality {settings.quality[0]} {settings.quality[1]}")
    (args.out / "SOURCES.md").write_text(sources_markdown(SOURCES, counts, command), encoding="utf-8")
    if args.contact_sheet is not None:
        picked = [rows[i] for i in pick_rows([r.manifest["source"] for r in rows], 20)]
        contact_sheet([r.jpeg for r in picked], [f"{r.manifest['source']} s{r.manifest['stroke']}" for r in picked],
                      args.contact_sheet)
    size = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"{len(rows)} rows from {len(counts)} sources -> {args.out} ({size / 1e6:.2f} MB) "
          f"in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
