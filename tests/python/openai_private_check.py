"""Drives the private route with the official `openai` SDK: chat (streamed and not) and
embeddings answered by real `cordon-inference` models behind the gateway.

Run by the e2e suite (tests/e2e/private.rs). Exits non-zero on the first failed check.
"""

import math
import os

import openai

base = os.environ["CORDON_BASE_URL"]
key = os.environ["CORDON_KEY"]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
user = [{"role": "user", "content": "你好, hello"}]
greedy = {"ignore_eos": True}
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    checks += 1


r = client.chat.completions.create(
    model="private-chat", messages=user, max_tokens=12, temperature=0, extra_body=greedy
)
text = r.choices[0].message.content
check(isinstance(text, str) and len(text) > 0, "chat content")
check(r.choices[0].finish_reason == "length", f"finish_reason {r.choices[0].finish_reason}")
check(r.usage.completion_tokens == 12, f"completion tokens {r.usage.completion_tokens}")
check(r.usage.total_tokens == r.usage.prompt_tokens + 12, "total tokens")

stream = client.chat.completions.create(
    model="private-chat",
    messages=user,
    max_tokens=12,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
    extra_body=greedy,
)
chunks = list(stream)
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(streamed == text, f"streamed {streamed!r} != {text!r}")
check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12, "stream usage")

# The SDK asks for base64 unless told otherwise and decodes it itself.
for kwargs in ({}, {"encoding_format": "float"}):
    e = client.embeddings.create(model="private-embed", input=["今天天气很好。", "The weather is lovely today."], **kwargs)
    check(len(e.data) == 2, "two vectors")
    for d in e.data:
        check(len(d.embedding) == 384, f"dimensions {len(d.embedding)}")
        check(abs(math.sqrt(sum(x * x for x in d.embedding)) - 1.0) < 1e-4, "normalised")
    check(e.usage.prompt_tokens > 4, "embedding usage")

try:
    client.chat.completions.create(model="private-chat", messages=user, temperature=7)
    check(False, "temperature 7 accepted")
except openai.BadRequestError as err:
    check(err.status_code == 400, "bad request status")

print(f"{checks} checks passed")
