"""Micro models with a planted neuron whose answer is known, shared by the EPO and pruning tests."""

import torch
from micro import micro_model

from lmfeatures.lm.hooks import HookedModel


def conjunction_model(vocab=2000, a=11, b=1234):
    """A one-layer micro llama whose MLP neuron 0, read at the last position, is largest when the
    2-token prompt holds both token a and token b (in either order): a conjunction that random
    search at a few hundred prompts finds with probability about 2 * 800 / vocab^2 < 1e-3.

    Attention is uniform (zero queries) and its value / output maps copy the span of u1, u2;
    token a's embedding is 3 u1, b's is 3 u2, every other token's lies outside that span. So at
    the last position the MLP sees x_last + (4 u1 [a present] + 4 u2 [b present]) / 2, and gate
    and up rows along (u1 + u2) give activation ~13.2 with both tokens and ~7.6 with one.
    """
    model = micro_model("llama", seed=0, vocab_size=vocab, n_layers=1)
    hm = HookedModel(model)
    d = hm.d_model
    u1, u2 = torch.eye(d)[0], torch.eye(d)[1]
    w = (u1 + u2) / 2**0.5
    layer = model.model.layers[0]  # test-only surgery on a known architecture
    attn, mlp = layer.self_attn, layer.mlp
    with torch.no_grad():
        w_e = hm.embedding_matrix()
        w_e.mul_(0.05)
        w_e[:, :2] = 0.0  # other tokens: nothing along u1, u2
        w_e[a], w_e[b] = 3.0 * u1, 3.0 * u2
        layer.input_layernorm.weight.fill_(1.0)
        layer.post_attention_layernorm.weight.fill_(1.0)
        attn.q_proj.weight.zero_()  # uniform attention over the prefix
        attn.v_proj.weight.zero_()
        attn.o_proj.weight.zero_()
        attn.v_proj.weight[0, 0] = attn.v_proj.weight[1, 1] = 1.0  # kv head 0 copies u1, u2 ...
        attn.o_proj.weight[0, 0] = attn.o_proj.weight[1, 1] = 1.0  # ... and query head 0 writes them back
        mlp.gate_proj.weight[0] = w
        mlp.up_proj.weight[0] = w
    return hm, (a, b)
