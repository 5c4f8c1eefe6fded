"""Drives Cordon's native /v1/messages with the official `anthropic` SDK."""

import os

import anthropic

base = os.environ["CORDON_BASE_URL"]
key = os.environ["CORDON_KEY"]
client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
user = [{"role": "user", "content": "hi"}]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    checks += 1


m = client.messages.create(model="claude-test", max_tokens=10, messages=user)
check(m.content[0].text == "echo: hi", "message text")
check(m.usage.input_tokens == 13 and m.usage.output_tokens == 5, "message usage")

with client.messages.stream(model="claude-test", max_tokens=10, messages=user) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
check(text == "Hello world", f"streamed text {text!r}")
check(final.stop_reason == "end_turn" and final.usage.output_tokens == 5, "final streamed message")

try:
    client.messages.create(model="no-such-model", max_tokens=10, messages=user)
    check(False, "unknown model must fail")
except anthropic.NotFoundError as err:
    check(err.status_code == 404, "unknown model error")

try:
    anthropic.Anthropic(base_url=base, api_key="ck-wrong", max_retries=0).messages.create(
        model="claude-test", max_tokens=10, messages=user
    )
    check(False, "bad key must fail")
except anthropic.AuthenticationError as err:
    check(err.status_code == 401, "bad key error")

print(f"anthropic sdk: {checks} checks passed")
