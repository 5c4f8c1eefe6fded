"""Drives Cordon with the official `openai` SDK and asserts on the parsed results.

Run by the e2e suite (tests/e2e/sdk.rs) against a gateway whose upstream is the mock in
tests/e2e/harness/mock.rs. Exits non-zero on the first failed check.
"""

import os

import openai

base = os.environ["CORDON_BASE_URL"]
key = os.environ["CORDON_KEY"]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
user = [{"role": "user", "content": "hi"}]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    checks += 1


r = client.chat.completions.create(model="gpt-test", messages=user)
check(r.choices[0].message.content == "echo: hi", "chat content")
check(r.usage.total_tokens == 18, "chat usage")

stream = client.chat.completions.create(
    model="gpt-test", messages=user, stream=True, stream_options={"include_usage": True}
)
chunks = list(stream)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(text == "Hello world", f"streamed text {text!r}")
check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7, "stream usage")

r = client.chat.completions.create(model="claude-test", messages=user)
check(r.choices[0].message.content == "echo: hi", "anthropic-backed chat")
chunks = list(client.chat.completions.create(model="claude-test", messages=user, stream=True))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(text == "Hello world", f"anthropic-backed stream {text!r}")
check(chunks[-1].choices[0].finish_reason == "stop", "anthropic-backed finish reason")

tools = [{
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}]
r = client.chat.completions.create(model="gpt-test", messages=user, tools=tools)
call = r.choices[0].message.tool_calls[0]
check(call.function.name == "get_weather" and call.function.arguments == '{"city":"Paris"}', "tool call passes through")

e = client.embeddings.create(model="gpt-test", input="hello")
check(e.data[0].embedding == [0.25, -0.5, 1.0], "embedding")

ids = [m.id for m in client.models.list()]
check("gpt-test" in ids and "claude-test" in ids, f"models {ids}")

try:
    client.chat.completions.create(model="no-such-model", messages=user)
    check(False, "unknown model must fail")
except openai.NotFoundError as err:
    check(err.status_code == 404 and "catalogue" in err.message, "unknown model error")

try:
    openai.OpenAI(base_url=f"{base}/v1", api_key="ck-wrong", max_retries=0).models.list()
    check(False, "bad key must fail")
except openai.AuthenticationError as err:
    check(err.status_code == 401, "bad key error")

try:
    for _ in client.chat.completions.create(model="die", messages=user, stream=True):
        pass
    check(False, "an interrupted stream must raise")
except openai.APIError as err:
    check("stream" in str(err.message) or "openai" in str(err.message), f"interrupted stream error {err.message!r}")

print(f"openai sdk: {checks} checks passed")
