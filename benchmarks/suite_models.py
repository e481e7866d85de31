"""The suite's models: the shapes it measures (configs as published, weights random), their files, and their FLOPs."""

from __future__ import annotations

from pathlib import Path

import torch

# ----- shapes (configs as published; weights random; RoPE scaling omitted: it changes no cost) -----
SHAPES: dict[str, dict] = {
    "qwen2.5-0.5b": {
        "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
    },
    "llama-3.2-1b": {
        "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
        "tie_word_embeddings": True, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
    },
    "cpu-small": {  # the single CPU benchmarks' model (benchmarks/README.md)
        "model_type": "llama", "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 263, "tie_word_embeddings": False,
        "max_position_embeddings": 2048,
    },
    "cpu-tiny": {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 263, "tie_word_embeddings": False,
        "max_position_embeddings": 2048,
    },
}  # fmt: skip
BYTE_VOCAB = 263  # the byte tokenizer's size
QWEN_VOCAB = 151936
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense, SXM; MFU only where the GPU is listed


def model_config(shape: str, vocab_size: int | None = None):
    from transformers import AutoConfig

    fields = dict(SHAPES[shape])
    kind = fields.pop("model_type")
    if vocab_size is not None:
        fields["vocab_size"] = vocab_size
    return AutoConfig.for_model(kind, pad_token_id=0, bos_token_id=1, eos_token_id=2, **fields)


def save_model(directory: Path, shape: str, vocab_size: int | None, device: str, dtype: torch.dtype) -> str:
    """A seeded random causal LM of a shape, with the byte tokenizer, saved like a hub checkpoint (in `dtype`)."""
    from transformers import AutoModelForCausalLM

    from rewardlab.modeling.tiny import build_byte_tokenizer

    if (directory / "config.json").exists():
        return str(directory)
    config = model_config(shape, vocab_size)
    torch.manual_seed(0)
    with torch.device(device):  # initialising 1B parameters on the GPU takes a moment, on one CPU core a while
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, 2
    model.save_pretrained(directory)
    build_byte_tokenizer(model_max_length=config.max_position_embeddings).save_pretrained(directory)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return str(directory)


def body_parameters(config) -> int:
    """Parameters of the decoder's matrix products (no embeddings, no LM head): what 6 N per token counts."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    skip = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def training_flops(config, lengths: list[int], lm_head_tokens: int = 0, forward_only: bool = False) -> float:
    """Model FLOPs of a forward+backward (3x the forward) over sequences of these lengths, no padding counted:
    6 N n for the matrix products + 6 L d n^2 for causal attention (QK^T and AV, half the square), + 6 H V per token
    through the LM head (GRM's regularisers). Forward only: a third."""
    n_body = body_parameters(config)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    attention = config.num_hidden_layers * heads * head_dim
    forward = sum(2 * n_body * n + 2 * attention * n * n for n in lengths)
    forward += 2 * config.hidden_size * config.vocab_size * lm_head_tokens
    return forward if forward_only else 3 * forward
