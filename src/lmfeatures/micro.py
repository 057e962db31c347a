"""Tiny randomly-initialised causal LMs for tests: one per supported architecture, no download.

    model = micro_model("llama", seed=0)  # d_model 16, 3 blocks, vocab 64, float32, eval mode

They are built from a `transformers` config, so they exercise exactly the module
layout (and so the hook points) of the real architecture at a size where a whole
test suite runs on a laptop CPU in seconds.
"""

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
)

MICRO_ARCHITECTURES = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2")

D_MODEL = 16
MAX_POSITIONS = 64
# HF's default init (std 0.02) makes activations and logits nearly constant at this width;
# a larger std gives O(1) variation, so tests comparing activations can actually fail.
INIT_STD = 0.2


def _config(model_type: str, vocab_size: int, n_layers: int) -> PretrainedConfig:
    if model_type == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=MAX_POSITIONS,
            n_embd=D_MODEL,
            n_layer=n_layers,
            n_head=2,
            n_inner=32,
            initializer_range=INIT_STD,
            # GPT-2's real bos/eos id (50256) is outside a tiny vocab; use the last token like GPT-2 does.
            bos_token_id=vocab_size - 1,
            eos_token_id=vocab_size - 1,
        )
    if model_type == "gpt_neox":
        return GPTNeoXConfig(
            vocab_size=vocab_size,
            max_position_embeddings=MAX_POSITIONS,
            hidden_size=D_MODEL,
            num_hidden_layers=n_layers,
            num_attention_heads=2,  # head_dim 8, so Pythia's 25% rotary dims are a whole pair
            intermediate_size=32,
            initializer_range=INIT_STD,
            bos_token_id=0,
            eos_token_id=min(2, vocab_size - 1),
        )
    # llama family: gated MLP, RMSNorm, rotary; 4 query heads sharing 2 key/value heads (GQA).
    config_cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}.get(model_type)
    if config_cls is None:
        raise ValueError(f"no micro model for {model_type!r}; choose one of {MICRO_ARCHITECTURES}")
    return config_cls(
        vocab_size=vocab_size,
        max_position_embeddings=MAX_POSITIONS,
        hidden_size=D_MODEL,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        initializer_range=INIT_STD,
        bos_token_id=0,
        eos_token_id=min(1, vocab_size - 1),
    )


def micro_model(model_type: str, seed: int = 0, vocab_size: int = 64, n_layers: int = 3) -> PreTrainedModel:
    """A tiny random `model_type` causal LM (float32, eval mode); the same seed gives the same weights.

    The global torch RNG is left as it was, so building a model does not perturb a caller's randomness.
    """
    config = _config(model_type, vocab_size, n_layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Eager attention: plain matmuls, identical on every backend and differentiable to any order.
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    return model.eval()
