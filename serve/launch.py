"""`make serve` / `make stop`: start swift deploy behind the gateway, wait until it answers, stop it.

swift deploy is a launcher (vLLM forks engine processes under it), so each component is started in
its own session and stopped by process group: `stop` leaves no process behind. The state (process
groups, URL, model name) lives in STATE_DIR/server.json.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from medvlm_vocab import API_KEY_ENV, FAMILIES, MAX_IMAGE_PIXELS, MAX_N, MAX_REQUEST_MB, client_host, get_family

LOOPBACK_NAMES = {"localhost"}
_UVICORN = re.compile(r"Uvicorn running on https?://[^:\s]+:(\d+)")
# Never fetch remote media, even for a request that bypasses the gateway: swift deploy only fetches
# from hosts listed here, and no request can resolve this reserved name.
_NO_REMOTE_HOSTS = "fetching.disabled.invalid"


class LaunchError(Exception):
    """A problem the user can fix; printed without a traceback."""


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    if not is_loopback(host) and not api_key:
        raise LaunchError(f"refusing to listen on {host} without an API key: anyone who can reach this "
                          "port could query the model. Set API_KEY=... (clients send it as a Bearer "
                          "token), or keep the default HOST=127.0.0.1.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_alive(pgid: int) -> bool:
    """True while a non-zombie process of the group exists (zombies hold no resources)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_groups(pgids: list[int], grace_s: float = 20.0) -> None:
    """SIGTERM each group, then SIGKILL whatever is left after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in pgids:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(group_alive(p) for p in pgids):
            time.sleep(0.2)
        if not any(group_alive(p) for p in pgids):
            return
    raise LaunchError(f"process groups {pgids} survived SIGKILL")


def spawn(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def get_json(url: str, api_key: str | None, timeout: float = 5.0) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def backend_port(log: Path) -> int | None:
    """swift deploy moves to another port when the asked one is taken; its log says which."""
    match = _UVICORN.search(log.read_text(errors="replace")) if log.exists() else None
    return int(match.group(1)) if match else None


def read_state(state_dir: Path) -> dict | None:
    path = state_dir / "server.json"
    return json.loads(path.read_text()) if path.exists() else None


def backend_command(args: argparse.Namespace, port: int) -> list[str]:
    family = get_family(args.family)
    cmd = [str(args.swift), "deploy", str(args.recipe), "--model", str(args.model),
           "--model_type", family.swift_model_type, "--template", family.swift_template,
           "--infer_backend", args.backend,
           "--host", "127.0.0.1", "--port", str(port)]
    return cmd + (["--served_model_name", args.served_name] if args.served_name else [])


def gateway_command(args: argparse.Namespace, backend_url: str) -> list[str]:
    cmd = [sys.executable, "-m", "serve.gateway", "--host", args.host, "--port", str(args.port),
           "--backend", backend_url, "--max-request-mb", str(args.max_request_mb),
           "--max-image-pixels", str(args.max_image_pixels), "--max-n", str(args.max_n)]
    return cmd + (["--allow-local-images"] if args.media_dir else [])


def backend_env(args: argparse.Namespace, state_dir: Path) -> dict[str, str]:
    no_media = state_dir / "no-local-media"
    no_media.mkdir(exist_ok=True)
    env = dict(os.environ, SWIFT_MEDIA_ALLOWED_DIRS=str(Path(args.media_dir or no_media).resolve()),
               SWIFT_URL_ALLOWED_HOSTS=_NO_REMOTE_HOSTS)
    env.pop(API_KEY_ENV, None)
    if Path(args.model).is_dir():
        env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def show_wait(start: float) -> None:
    print(f"\rwaiting for the model server ({time.monotonic() - start:.0f} s)", end="", flush=True)


def check_alive(procs: dict[str, subprocess.Popen], logs: dict[str, Path]) -> None:
    for name, proc in procs.items():
        if proc.poll() is not None:
            raise LaunchError(f"{name} exited with status {proc.returncode} while starting; last lines "
                              f"of {logs[name]}:\n{tail(logs[name])}")


def wait_ready(procs: dict[str, subprocess.Popen], logs: dict[str, Path], url: str, api_key: str | None,
               start: float, timeout_s: float) -> dict:
    """Poll /v1/models through the gateway until it answers; fail fast when a component exits."""
    while time.monotonic() - start < timeout_s:
        check_alive(procs, logs)
        try:
            return get_json(f"{url}/v1/models", api_key)
        except (urllib.error.URLError, OSError, ValueError):
            pass
        show_wait(start)
        time.sleep(2)
    raise LaunchError(f"no answer from {url}/v1/models after {timeout_s:.0f} s; last lines of "
                      f"{logs['backend']}:\n{tail(logs['backend'])}")


def start(args: argparse.Namespace) -> None:
    api_key = os.environ.get(API_KEY_ENV) or None
    check_exposure(args.host, api_key)
    if not (Path(args.model) / "config.json").exists() and Path(args.model).exists():
        raise LaunchError(f"{args.model} is not a checkpoint (no config.json); run `make merge` first")
    if not Path(args.model).exists():
        raise LaunchError(f"{args.model} does not exist; run `make merge` first or set SERVE_MODEL=")
    state_dir = args.state_dir
    state = read_state(state_dir)
    if state and any(group_alive(p) for p in state["pgids"]):
        raise LaunchError(f"already serving at {state['url']}; run `make stop` first")
    state_dir.mkdir(parents=True, exist_ok=True)
    logs = {"backend": state_dir / "backend.log", "gateway": state_dir / "gateway.log"}
    for log in logs.values():
        log.unlink(missing_ok=True)
    procs = {"backend": spawn(backend_command(args, free_port()), logs["backend"], backend_env(args, state_dir))}
    url = f"http://{client_host(args.host)}:{args.port}"
    pgids, started = [procs["backend"].pid], time.monotonic()
    # Recorded at once, so `make stop` finds the processes even if this launcher is killed while waiting.
    (state_dir / "server.json").write_text(json.dumps({"url": url, "pgids": pgids}))
    try:
        while (port := backend_port(logs["backend"])) is None:
            check_alive(procs, logs)
            if time.monotonic() - started > args.timeout:
                raise LaunchError(f"swift deploy did not start in {args.timeout:.0f} s; last lines of "
                                  f"{logs['backend']}:\n{tail(logs['backend'])}")
            show_wait(started)
            time.sleep(1)
        procs["gateway"] = spawn(gateway_command(args, f"http://127.0.0.1:{port}"), logs["gateway"],
                                 dict(os.environ))
        pgids.append(procs["gateway"].pid)
        (state_dir / "server.json").write_text(json.dumps({"url": url, "pgids": pgids}))
        models = wait_ready(procs, logs, url, api_key, started, args.timeout)
    except BaseException:
        stop_groups(pgids)
        (state_dir / "server.json").unlink(missing_ok=True)
        raise
    name = models["data"][0]["id"]
    (state_dir / "server.json").write_text(json.dumps({"url": url, "model": name, "pgids": pgids}))
    print(f"\nserving {name!r} at {url}/v1 (OpenAI-compatible; backend {args.backend}); "
          f"logs in {state_dir}; stop with `make stop`")


def stop(args: argparse.Namespace) -> None:
    state = read_state(args.state_dir)
    if state is None:
        print("no server running")
        return
    stop_groups(state["pgids"])
    (args.state_dir / "server.json").unlink()
    print(f"stopped the server at {state['url']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("start")
    run.add_argument("--model", required=True, type=Path)
    run.add_argument("--family", default="qwen2_vl", choices=sorted(FAMILIES))
    run.add_argument("--backend", default="vllm", choices=["vllm", "transformers"])
    run.add_argument("--recipe", type=Path, default=Path("recipes/serve/tiny-cpu.yaml"))
    run.add_argument("--swift", type=Path, default=Path(".venv-serve/bin/swift"))
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--served-name", default="medvlm")
    run.add_argument("--media-dir", help="the one folder local image paths may point into (default: none)")
    run.add_argument("--max-request-mb", type=float, default=MAX_REQUEST_MB)
    run.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS)
    run.add_argument("--max-n", type=int, default=MAX_N, help="most choices (`n`) one request may ask for")
    run.add_argument("--timeout", type=float, default=900, help="seconds to wait for the server")
    for p in (run, sub.add_parser("stop")):
        p.add_argument("--state-dir", type=Path, default=Path("output/serve"))
    args = parser.parse_args(argv)
    try:
        start(args) if args.command == "start" else stop(args)
    except LaunchError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
