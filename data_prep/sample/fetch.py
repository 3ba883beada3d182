"""Getting the pyradiomics source distribution, whose data/ folder holds CT and MR with lesion masks.

The masks ship only in the sdist (not the wheels), so it is fetched with pip itself and
checked against a pinned hash: the sample is rebuilt from exactly the same bytes every time.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from data_prep.sample.catalog import RADIOMICS_SDIST, RADIOMICS_SHA256, RADIOMICS_VERSION

# pip builds an sdist's metadata even for `pip download`; pyradiomics' setup.py imports numpy,
# versioneer and setuptools.command.test (gone in setuptools 72), so it runs in a throwaway
# venv with these, never touching the caller's environment.
METADATA_BUILD_REQUIREMENTS = ("setuptools==71.1.0", "wheel==0.48.0", "versioneer==0.29", "numpy==2.2.6")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pip_download(dest: Path) -> None:
    """`pip download` the sdist from a temporary venv that can build its metadata."""
    with tempfile.TemporaryDirectory(prefix="radiomics-fetch-") as scratch:
        python = Path(scratch) / "bin" / "python"
        subprocess.run([sys.executable, "-m", "venv", scratch], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *METADATA_BUILD_REQUIREMENTS], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "--no-build-isolation", f"pyradiomics=={RADIOMICS_VERSION}", "--dest", str(dest)],
            check=True,
        )


def radiomics_sdist(path: Path | None, cache_dir: Path) -> Path:
    """The verified sdist: `path` if given, else the cached copy, downloading it when missing."""
    sdist = path or cache_dir / RADIOMICS_SDIST
    if path is None and not sdist.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        pip_download(cache_dir)
    found = sha256(sdist)
    if found != RADIOMICS_SHA256:
        raise ValueError(f"{sdist}: sha256 {found} is not the pinned {RADIOMICS_SHA256}")
    return sdist
