"""One short check of the server on the embedded model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import openai
import pytest

from sazanami.server import Limits, create_app
from sazanami.server.testing import serving

pytestmark = pytest.mark.real


def test_embedded_model_answers_and_streams(real_engine):
    with serving(create_app("smollm2-135m", Limits(max_tokens=32), engine=real_engine)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        msg = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
        r = client.chat.completions.create(model="smollm2-135m", messages=msg, max_tokens=8, temperature=0)
        assert "paris" in r.choices[0].message.content.lower()
        stream = client.chat.completions.create(
            model="smollm2-135m", messages=msg, max_tokens=8, n=2, seed=1, stream=True,
            extra_body={"fluctuation": "pink-temperature"},
        )  # fmt: skip
        texts = {0: "", 1: ""}
        for chunk in stream:
            for ch in chunk.choices:
                texts[ch.index] += ch.delta.content or ""
        assert all(t.strip() for t in texts.values())
