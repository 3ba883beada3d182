"""The exit-code convention every eval command shares: 0 done, 2 a clear error line, 130 interrupted."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def run_main(run: Callable[[argparse.Namespace], object], args: argparse.Namespace,
             errors: tuple[type[BaseException], ...], interrupted: str = "interrupted") -> int:
    """Run a command; an expected error becomes one `error: ...` line on stderr and exit code 2."""
    try:
        run(args)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{interrupted}", file=sys.stderr)
        return 130
    return 0
