"""Tiny randomly-initialised causal LMs for tests, of any architecture, no download.

    model = micro_model("llama", seed=0)  # d_model 16, 3 blocks, vocab 64, float32, eval mode
    model = micro_model("gemma2")         # any causal-LM model_type: its default config, shrunk

They are built from a `transformers` config, so they exercise exactly the module
layout (and so the hook points) of the real architecture at a size where a whole
test suite runs on a laptop CPU in seconds. MICRO_ARCHITECTURES have hand-written configs
(d_model 16); every other type gets its default config with the size fields shrunk
(`shrunk_config`, d_model 32), which works for most and raises MicroModelError otherwise.
"""

import functools

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
)

from lmfeatures.lm.models import n_parameters

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
        return shrunk_config(model_type, vocab_size, n_layers)
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


class MicroModelError(ValueError):
    """This model_type cannot be built at micro size from its default config."""


# Size fields of transformers configs (under any of their names) and their micro values. Widths
# differ from each other (d_model 32, MLP 48, heads of 8) so a hook point of the wrong width is caught.
MICRO_SIZES = {
    ("hidden_size", "n_embd", "d_model", "dim", "model_dim", "word_embed_proj_dim", "embedding_size"): 32,
    ("input_embedding_size", "output_embedding_size"): 32,
    ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size", "d_ff", "inner_hidden_size"): 48,
    ("decoder_ffn_dim", "encoder_ffn_dim", "moe_intermediate_size", "shared_expert_intermediate_size"): 48,
    ("num_attention_heads", "n_head", "n_heads", "num_heads", "decoder_attention_heads"): 4,
    ("encoder_attention_heads",): 4,
    ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num"): 2,
    ("head_dim", "kv_channels", "attention_head_dim", "v_head_dim"): 8,
    ("rotary_dim", "qk_rope_head_dim", "qk_nope_head_dim"): 4,
    ("kv_lora_rank", "q_lora_rank"): 16,
    ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"): 4,
    ("num_experts_per_tok", "moe_topk", "n_shared_experts"): 1,
    ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"): MAX_POSITIONS,
    ("sliding_window", "attention_window_size", "sliding_window_size"): 16,
}
LAYER_COUNTS = ("num_hidden_layers", "n_layer", "num_layers", "decoder_layers", "encoder_layers")
MAX_MICRO_PARAMETERS = 3_000_000


def shrunk_config(model_type: str, vocab_size: int, n_layers: int) -> PretrainedConfig:
    """`model_type`'s default config with every size field it has set to a micro value (text sub-config
    included); MicroModelError when the result is still large or inconsistent."""
    try:
        config = AutoConfig.for_model(model_type)
    except Exception as err:  # noqa: BLE001 - any failure means: no default config to shrink
        raise MicroModelError(f"{model_type}: no default config ({type(err).__name__}: {err})") from None
    try:
        text = config.get_text_config()
    except ValueError as err:  # several text configs (encoder-decoder audio models)
        raise MicroModelError(f"{model_type}: {err}") from None
    sizes = {name: value for names, value in MICRO_SIZES.items() for name in names}
    sizes = {"vocab_size": vocab_size, **sizes, **dict.fromkeys(LAYER_COUNTS, n_layers)}
    for sub in {id(c): c for c in (config, text)}.values():
        for name, value in sizes.items():
            try:  # some configs derive a field (a read-only property) or have it per layer only
                if isinstance(getattr(sub, name, None), int) and not isinstance(getattr(sub, name), bool):
                    setattr(sub, name, value)
            except Exception:  # noqa: BLE001 - the field stays; the size check below catches what matters
                continue
        layer_types = getattr(sub, "layer_types", None)
        if isinstance(layer_types, list) and len(layer_types) != n_layers:
            sub.layer_types = layer_types[:n_layers]
        sub.initializer_range = INIT_STD
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if isinstance(getattr(sub, name, None), int) and getattr(sub, name) >= vocab_size:
                setattr(sub, name, vocab_size - 1)
    return config


def micro_model(model_type: str, seed: int = 0, vocab_size: int = 64, n_layers: int = 3) -> PreTrainedModel:
    """A tiny random `model_type` causal LM (float32, eval mode); the same seed gives the same weights.

    The global torch RNG is left as it was, so building a model does not perturb a caller's randomness.
    """
    config = _config(model_type, vocab_size, n_layers)
    with torch.device("meta"):  # count parameters before allocating any
        try:
            size = n_parameters(AutoModelForCausalLM.from_config(config))
        except Exception as err:  # noqa: BLE001 - the shrunk config is inconsistent for this type
            raise MicroModelError(f"{model_type}: cannot build at micro size ({type(err).__name__}: {err})") from None
    if size > MAX_MICRO_PARAMETERS:
        raise MicroModelError(f"{model_type}: {size:,} parameters at micro size; a config field stays large")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Eager attention: plain matmuls, identical on every backend and differentiable to any order.
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    return model.eval()


PASSED, REFUSED, NO_NEURONS, NOT_BUILT = "passed", "refused", "no neurons", "not built"


@functools.cache  # the coverage test and the README script ask for each type more than once
def hook_coverage(model_type: str) -> tuple[str, str, PreTrainedModel | None]:
    """How HookedModel fares on a micro `model_type`: (status, detail, model).

    passed      every hook point discovered and verified at load (detail: the module paths)
    no neurons  built and verified; mlp hooks refused with the reason (mixture of experts, no MLP)
    refused     HookedModel stops with a one-line ArchitectureError (detail: the message)
    not built   no micro model: its default config cannot be shrunk, or its own forward fails
    """
    from lmfeatures.lm.architectures import ArchitectureError
    from lmfeatures.lm.hooks import HookedModel

    try:
        model = micro_model(model_type, n_layers=2)
        with torch.no_grad():
            model(input_ids=torch.randint(0, 64, (1, 8)), use_cache=False)
    except MicroModelError as err:
        return NOT_BUILT, str(err).partition(": ")[2].splitlines()[0], None
    except Exception as err:  # noqa: BLE001 - the model's own forward, not ours
        return NOT_BUILT, f"its forward fails at micro size ({type(err).__name__})", None
    try:
        hooked = HookedModel(model)
    except ArchitectureError as err:
        return REFUSED, str(err), model
    if hooked.spec.no_neurons:
        return NO_NEURONS, hooked.spec.no_neurons, model
    spec = hooked.spec
    return PASSED, f"{spec.blocks} / {spec.mlp_out} / {spec.mlp_act or '-'} / {spec.final_norm or '-'}", model


def save_local_model(model_type: str, out_dir: str, seed: int = 0, vocab_size: int = 512) -> None:
    """Save a micro `model_type` model with a byte-level BPE tokenizer (trained on a few standard-library
    modules) the way a hub model is stored: save_pretrained, so `source: <out_dir>` loads it like one."""
    import inspect
    import json as json_module
    import textwrap

    import datasets

    from lmfeatures.lm.tokenizer import TokenizerConfig, train_tokenizer

    texts = [inspect.getsource(m) for m in (json_module, textwrap, inspect)]
    tokenizer = train_tokenizer(datasets.Dataset.from_dict({"text": texts}), TokenizerConfig(vocab_size=vocab_size))
    model = micro_model(model_type, seed=seed, vocab_size=len(tokenizer), n_layers=2)
    model.config.eos_token_id = model.config.bos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def save_fill_mask_model(out_dir: str, words: list[str], seed: int = 0) -> None:
    """Save a micro BERT masked LM whose WordPiece vocabulary is `words` (plus BERT's special
    tokens) with save_pretrained, as a user's fill-mask model (e.g. distilbert-base-uncased) is stored."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [w for w in dict.fromkeys(words) if w not in vocab]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=D_MODEL,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=MAX_POSITIONS,
        initializer_range=INIT_STD,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        BertForMaskedLM(config).eval().save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


if __name__ == "__main__":  # python tests/micro.py qwen3 local-models/qwen3-micro
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python tests/micro.py MODEL_TYPE OUT_DIR   (e.g. qwen3 local-models/qwen3-micro)")
    save_local_model(sys.argv[1], sys.argv[2])
    print(f"saved a micro {sys.argv[1]} model and its tokenizer to {sys.argv[2]}")
