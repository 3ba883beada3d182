"""Turn a `swift export --merge_lora` output into a plain family checkpoint that any server loads.

The merge is done by swift; this only removes what training needed and serving must not see:
the `med_task_uncertainty` tensors (the learned task log-variances; vLLM refuses weights it has no
parameter for) and, in args.json, the med model type, the med template and the plugin path (swift
deploy re-reads args.json and would otherwise import medvlm's plugin into the serving venv).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from swift_ext.models import UNCERTAINTY_MODULE

INDEX = "model.safetensors.index.json"


def is_training_only(name: str) -> bool:
    return name.split(".", 1)[0] == UNCERTAINTY_MODULE


def plain_type(name: str | None) -> str | None:
    """`med_qwen2_vl` -> `qwen2_vl`; other names unchanged."""
    return name[len("med_"):] if name and name.startswith("med_") else name


def strip_shard(path: Path) -> list[str]:
    """Rewrite one safetensors shard without the training-only tensors; return their names."""
    with safe_open(str(path), "pt") as f:
        names = list(f.keys())
        dropped = [n for n in names if is_training_only(n)]
        if not dropped:
            return []
        tensors = {n: f.get_tensor(n) for n in names if not is_training_only(n)}
        metadata = f.metadata()
    save_file(tensors, str(path), metadata=metadata)
    return dropped


def strip_index(index_path: Path) -> None:
    index = json.loads(index_path.read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if not is_training_only(k)}
    index_path.write_text(json.dumps(index, indent=2))


def plain_args(args: dict) -> dict:
    """args.json of the merged checkpoint as if it had been trained with the plain family."""
    out = dict(args, model_type=plain_type(args.get("model_type")), template=plain_type(args.get("template")))
    out["external_plugins"] = []
    return out


def make_servable(ckpt: Path) -> list[str]:
    """Strip `ckpt` in place; return the names of the removed tensors."""
    shards = sorted(ckpt.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"{ckpt}: no *.safetensors; is it the output of `swift export --merge_lora`?")
    dropped = [name for shard in shards for name in strip_shard(shard)]
    if (ckpt / INDEX).exists():
        strip_index(ckpt / INDEX)
    args_path = ckpt / "args.json"
    if args_path.exists():
        args_path.write_text(json.dumps(plain_args(json.loads(args_path.read_text())), indent=2))
    return dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    ckpt = parser.parse_args(argv).checkpoint
    try:
        dropped = make_servable(ckpt)
    except FileNotFoundError as e:
        print(f"error: {e}")
        return 2
    print(f"{ckpt}: removed {len(dropped)} training-only tensor(s) {dropped}; ready to serve")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
