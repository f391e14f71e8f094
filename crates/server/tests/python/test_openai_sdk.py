"""The official `openai` Python SDK against a running `sprout serve` (issue 4, item 7).

Run: start `sprout serve --port 9000 --api-key test-key`, then
  SPROUT_URL=http://127.0.0.1:9000/v1 SPROUT_API_KEY=test-key pytest -q crates/server/tests/python
"""
import os

import openai
import pytest

URL = os.environ.get("SPROUT_URL", "http://127.0.0.1:9000/v1")
KEY = os.environ.get("SPROUT_API_KEY", "test-key")
MODEL = os.environ.get("SPROUT_MODEL_NAME", "default")


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=URL, api_key=KEY, max_retries=0)


def test_non_streaming_and_streaming_agree(client):
    msgs = [{"role": "user", "content": "Name a fern."}]
    full = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, temperature=0)
    assert full.choices[0].finish_reason in ("stop", "length")
    assert full.usage.completion_tokens <= 8
    stream = client.chat.completions.create(
        model=MODEL, messages=msgs, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True})
    text, usage = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert text == full.choices[0].message.content
    assert usage.completion_tokens == full.usage.completion_tokens


def test_errors_are_sdk_exceptions(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=0)
    assert "max_tokens" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=URL, api_key="wrong", max_retries=0).models.list()


def test_models_and_completions(client):
    assert MODEL in [m.id for m in client.models.list().data]
    c = client.completions.create(model=MODEL, prompt="def add(a, b):", max_tokens=4, temperature=0)
    assert isinstance(c.choices[0].text, str)
