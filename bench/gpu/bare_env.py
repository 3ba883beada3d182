"""A Python environment holding only the GPU image's packages, for rehearsing bench/gpu.sh on CPU.

A lent GPU comes for minutes and reaches no package index, so a wheel missing from
bench/gpu/wheels.txt would be found there, at the cost of the whole lease. This builds, from the
packages of the environment that runs it, a folder of links to exactly the distributions named in
bench/gpu/image-packages.txt and a fresh venv that sees only that folder; gpu.sh then installs the
carried wheels over it as it does on the GPU (`pip install --target`, first on PYTHONPATH).

    .venv/bin/python bench/gpu/bare_env.py /tmp/medvlm-gpu-bare    # prints the bare python's path
    .venv/bin/python bench/gpu/bare_env.py --fill .whl/py311       # image packages the wheels need, absent here

The second lists what the image provides and the carried wheels require but this machine's venv
lacks (msgpack for deepspeed, ...): gpu.sh --fetch-wheels downloads those for the rehearsal only.
"""
from __future__ import annotations

import re
import subprocess
import zipfile
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = HERE / "image-packages.txt") -> set[str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return {normalize(line) for line in lines if line and not line.startswith("#")}


def top_level_entries(dist: metadata.Distribution) -> set[Path]:
    """The site-packages entries (packages, modules, .dist-info, extension libraries) of a distribution."""
    root = Path(dist.locate_file(""))
    entries = set()
    for file in dist.files or []:
        first = Path(file).parts[0]
        if first in ("..", "__pycache__") or first.endswith(".data"):
            continue
        entries.add(root / first)
    return entries


def build(target: Path) -> Path:
    """Link the image's packages into target/site and make target/venv see only them; returns its python."""
    wanted = image_packages()
    site = target / "site"
    site.mkdir(parents=True, exist_ok=True)
    found = set()
    for dist in metadata.distributions():
        name = normalize(dist.metadata["Name"])
        if name not in wanted or name in found:
            continue
        found.add(name)
        for entry in top_level_entries(dist):
            link = site / entry.name
            if entry.exists() and not link.exists():
                link.symlink_to(entry)
    venv = target / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c", query], check=True, capture_output=True,
                                  text=True).stdout.strip())
    (purelib / "gpu-image.pth").write_text(str(site) + "\n")
    missing = sorted(wanted - found)
    (target / "not-here.txt").write_text("\n".join(missing) + "\n")  # image packages this machine lacks (jax, ...)
    return venv / "bin" / "python"


def fill_requirements(wheel_dir: Path) -> list[str]:
    """Names the wheels in `wheel_dir` require (extras aside) that the image has and this venv lacks."""
    here = {normalize(d.metadata["Name"]) for d in metadata.distributions()}
    needed = set()
    for wheel in wheel_dir.glob("*.whl"):
        with zipfile.ZipFile(wheel) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            for line in z.read(meta).decode().splitlines():
                if line.startswith("Requires-Dist:") and "extra ==" not in line:
                    needed.add(normalize(re.split(r"[ ;<>=!~\[(]", line.split(":", 1)[1].strip())[0]))
    return sorted((needed & image_packages()) - here)


if __name__ == "__main__":
    if sys.argv[1] == "--fill":
        print("\n".join(fill_requirements(Path(sys.argv[2]))))
    else:
        print(build(Path(sys.argv[1]).resolve()))
