"""Micro models with a planted neuron whose answer is known, shared by the EPO and pruning tests."""

import torch
from micro import micro_model

from lmfeatures.lm.hooks import HookedModel


def _two_token_model(vocab: int, a: int, b: int, copied: tuple[int, ...]):
    """A one-layer micro llama where token a's embedding is 3 u1, b's is 3 u2 and every other
    token's lies outside their span; attention is uniform over the prefix (zero queries) and copies
    the directions u_i, i in `copied` (0: u1, 1: u2), forward. Returns (hooked model, u1, u2, its MLP)."""
    model = micro_model("llama", seed=0, vocab_size=vocab, n_layers=1)
    hm = HookedModel(model)
    u1, u2 = torch.eye(hm.d_model)[0], torch.eye(hm.d_model)[1]
    layer = model.model.layers[0]  # test-only surgery on a known architecture
    attn = layer.self_attn
    with torch.no_grad():
        w_e = hm.embedding_matrix()
        w_e.mul_(0.05)
        w_e[:, :2] = 0.0  # other tokens: nothing along u1, u2
        w_e[a], w_e[b] = 3.0 * u1, 3.0 * u2
        layer.input_layernorm.weight.fill_(1.0)
        layer.post_attention_layernorm.weight.fill_(1.0)
        attn.q_proj.weight.zero_()
        attn.v_proj.weight.zero_()
        attn.o_proj.weight.zero_()
        for i in copied:  # kv head 0 copies u_i and query head 0 writes it back
            attn.v_proj.weight[i, i] = attn.o_proj.weight[i, i] = 1.0
    return hm, u1, u2, layer.mlp


def conjunction_model(vocab=2000, a=11, b=1234):
    """A one-layer micro llama whose MLP neuron 0, read at the last position, is largest when the
    2-token prompt holds both token a and token b (in either order): a conjunction that random
    search at a few hundred prompts finds with probability about 2 * 800 / vocab^2 < 1e-3.

    Attention copies both u1 and u2 (_two_token_model), so at the last position the MLP sees
    x_last + (4 u1 [a present] + 4 u2 [b present]) / 2, and gate and up rows along (u1 + u2) give
    activation ~13.2 with both tokens and ~7.6 with one.
    """
    hm, u1, u2, mlp = _two_token_model(vocab, a, b, copied=(0, 1))
    with torch.no_grad():
        mlp.gate_proj.weight[0] = mlp.up_proj.weight[0] = (u1 + u2) / 2**0.5
    return hm, (a, b)


def ordered_pair_model(vocab=120, a=11, b=12):
    """A one-layer micro llama whose MLP neuron 0 fires at token b only when token a came before it:
    the context-dependent neuron a pattern must capture and a token lookup cannot.

    Attention copies u1 only (_two_token_model). The neuron's gate reads u2 (the current token is
    b) and its up projection u1 (a is in the prefix), so silu(gate) * up is 0 at b without a, 0 at
    a, 0 elsewhere, and ~4.7 at b right after a (falling as the prefix grows).
    """
    hm, u1, u2, mlp = _two_token_model(vocab, a, b, copied=(0,))
    with torch.no_grad():
        mlp.gate_proj.weight[0] = u2
        mlp.up_proj.weight[0] = u1
    return hm, (a, b)
