"""What every eval command shares: the endpoint options, and the exit codes (0 done, 2 a clear error
line, 130 interrupted)."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from eval.client import DEFAULT_URL
from medvlm_vocab import API_KEY_ENV


def add_endpoint_args(p: argparse.ArgumentParser, *, batch: bool = True) -> None:
    """--url, --model, --api-key and --timeout; with `batch`, --concurrency and --retries too."""
    p.add_argument("--url", default=DEFAULT_URL, help=f"OpenAI-compatible server (default {DEFAULT_URL})")
    p.add_argument("--model", default=None, help="served model name (default: the first of GET /v1/models)")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None,
                   help=f"bearer token, if the server was started with one (default: ${API_KEY_ENV})")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")
    if batch:
        p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
        p.add_argument("--retries", type=int, default=3,
                       help="retries per request on connection errors/5xx (default 3)")


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
