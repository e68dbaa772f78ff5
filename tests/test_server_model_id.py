"""The id a model is served under (issue 28): a model loaded from a path is served under the
file's stem (GGUF) or the directory's name, never the path, which would show the server's file
system to every client; requests may name it by that id (or by the path it was loaded from)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from sazanami import models
from sazanami.server import Limits, create_app
from sazanami.server.app import model_id
from sazanami.server.testing import serving

GGUF = "/srv/private/models/SmolLM2-135M-Instruct.Q4_1.gguf"  # never opened: the engine is given


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def _post(url: str, body: dict) -> tuple[int, str]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_model_id_of_names_and_paths(tmp_path):
    assert model_id("tiny-random") == "tiny-random" and model_id(models.DEFAULT_MODEL) == models.DEFAULT_MODEL
    assert model_id(GGUF) == "SmolLM2-135M-Instruct.Q4_1"
    assert model_id("local.gguf") == "local"
    (tmp_path / "my-llama").mkdir()
    assert model_id(str(tmp_path / "my-llama")) == "my-llama"
    assert model_id(str(tmp_path / "my-llama") + "/") == "my-llama"
    assert model_id("noise-lm:" + str(tmp_path / "run-3")) == "noise-lm:run-3"


def test_a_path_is_served_under_its_stem_and_never_shown(tiny_engine):
    app = create_app(GGUF, Limits(max_tokens=16), engine=tiny_engine)
    with serving(app) as url:
        listed = json.loads(_get(f"{url}/v1/models"))
        assert [m["id"] for m in listed["data"]] == ["SmolLM2-135M-Instruct.Q4_1"]
        pages = [
            _get(f"{url}/v1/models"),
            _get(f"{url}/v1/models/SmolLM2-135M-Instruct.Q4_1"),
            _get(f"{url}/v1/sazanami"),
            _get(f"{url}/health"),
        ]
        body = {"prompt": "x", "max_tokens": 3, "seed": 1}
        for name in ("SmolLM2-135M-Instruct.Q4_1", GGUF, None):  # the id, the old spelling, none
            status, text = _post(f"{url}/v1/completions", body | ({"model": name} if name else {}))
            assert status == 200 and json.loads(text)["model"] == "SmolLM2-135M-Instruct.Q4_1"
            pages.append(text if name != GGUF else text.replace(GGUF, ""))  # (a request may echo itself)
        status, text = _post(f"{url}/v1/completions", body | {"stream": True, "model": "SmolLM2-135M-Instruct.Q4_1"})
        assert status == 200 and '"model":"SmolLM2-135M-Instruct.Q4_1"' in text
        pages.append(text)
        status, text = _post(
            f"{url}/v1/chat/completions", {"model": "other", "messages": [{"role": "user", "content": "x"}]}
        )
        assert status == 404 and "SmolLM2-135M-Instruct.Q4_1" in text
        pages.append(text)
        for page in pages:
            assert "/srv/private" not in page, page[:300]


def test_a_directory_is_served_under_its_name(tiny_engine, tmp_path):
    where = tmp_path / "secret-place" / "my-llama"
    where.mkdir(parents=True)
    with serving(create_app(str(where), Limits(max_tokens=16), engine=tiny_engine)) as url:
        text = _get(f"{url}/v1/models")
        assert [m["id"] for m in json.loads(text)["data"]] == ["my-llama"] and "secret-place" not in text
        status, _ = _post(f"{url}/v1/completions", {"model": "my-llama", "prompt": "x", "max_tokens": 2})
        assert status == 200


@pytest.mark.skipif(
    not __import__("sazanami.backends.llamacpp", fromlist=["available"]).available(),
    reason="needs llama.cpp (make fast)",
)
def test_the_smollm2_gguf_loaded_from_its_path(tmp_path):
    try:
        path = models.gguf_path(models.DEFAULT_MODEL)
    except Exception as exc:  # noqa: BLE001 - the wheel that holds it is not installed
        pytest.skip(f"no embedded GGUF: {exc}")
    app = create_app(str(path), Limits(max_tokens=8, max_batch_rows=2), backend="llamacpp", threads=1)
    with serving(app) as url:
        text = _get(f"{url}/v1/models")
        assert [m["id"] for m in json.loads(text)["data"]] == [path.stem]
        assert str(path.parent) not in text and str(path.parent) not in _get(f"{url}/health")
        status, answer = _post(
            f"{url}/v1/completions", {"model": path.stem, "prompt": "Hi", "max_tokens": 2, "seed": 0}
        )
        assert status == 200 and json.loads(answer)["model"] == path.stem
