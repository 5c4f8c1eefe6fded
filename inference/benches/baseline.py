"""The benchmark's model and its transformers baseline.

    python baseline.py make DIR            # a random-weight Llama of realistic shape, saved to DIR
    python baseline.py run DIR THREADS     # prefill and decode tokens/s with transformers

`run` prints one JSON object: prefill_tps (a 128-token prompt, one forward) and decode_tps
(greedy generation of 64 tokens after a 16-token prompt, with the KV cache), medians of 3.
"""

import json
import statistics
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

PROMPT, DECODE_PROMPT, NEW = 128, 16, 64


def make(path):
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path, safe_serialization=True)


def run(path, threads):
    torch.set_num_threads(threads)
    model = LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(3, 32000, (1, PROMPT), generator=gen)
    short = prompt[:, :DECODE_PROMPT]
    prefill, decode = [], []
    with torch.inference_mode():
        model(short)  # warm-up
        for _ in range(3):
            t = time.perf_counter()
            model(prompt, use_cache=False)
            prefill.append(PROMPT / (time.perf_counter() - t))
            t = time.perf_counter()
            out = model.generate(
                short,
                attention_mask=torch.ones_like(short),
                max_new_tokens=NEW,
                min_new_tokens=NEW,
                do_sample=False,
            )
            assert out.shape[1] == DECODE_PROMPT + NEW
            decode.append(NEW / (time.perf_counter() - t))
    print(json.dumps({"prefill_tps": statistics.median(prefill), "decode_tps": statistics.median(decode)}))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        run(sys.argv[2], int(sys.argv[3]))
