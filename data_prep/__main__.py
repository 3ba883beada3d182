"""`python -m data_prep {convert,pairs} ...`: dispatch to the subcommand's own main().

Subcommands are imported lazily, so `pairs` does not pay for OpenCV/pyarrow and a missing
optional dependency of one command does not break the other.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "convert": ("data_prep.convert", "MedTrinity-25M -> ms-swift JSONL, images, rois.jsonl, report"),
    "pairs": ("data_prep.pairs", "ms-swift DPO preference pairs (clinician import or synthetic)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m data_prep",
        description="MedTrinity-25M data preparation. Run `python -m data_prep COMMAND --help` for options.",
        epilog="\n".join(f"  {k:8s} {v[1]}" for k, v in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    ns = parser.parse_args(argv[:1])
    module = importlib.import_module(COMMANDS[ns.command][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
