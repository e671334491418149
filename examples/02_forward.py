"""A forward pass through the default model, layer by layer, printing every tensor's shape.

The textbook model's steps (`model.forward`: token + position embedding, then per block
`x = x + attention(ln1(x))` and `x = x + mlp(ln2(x))`, then the final layer norm and the
unembedding), taken one at a time with the layers of `tinygrok.layers` that its blocks are made
of. Inside the first block's attention the projection, the per-head attention weights and the
output projection are shown too. At the end the
logits are compared with `model.forward` and with the fast model that training uses
(`fast.logits`, which computes only what reaches the loss, each shared row once).

Shape legend: B batch, T = 4 positions, C d_model, NH heads, HS = C / NH, F d_mlp, V vocabulary,
P = p answer classes.

    python examples/02_forward.py [--engine numba] [--quick]
"""

from __future__ import annotations

import argparse

import numpy as np

from tinygrok import fast, model
from tinygrok import layers as L
from tinygrok.config import ENGINES, Config, validate
from tinygrok.kernels.attention import attention_forward
from tinygrok.params import init_params, n_params
from tinygrok.tasks import make_dataset


def show(name: str, t: np.ndarray, what: str) -> None:
    """One line: the tensor's name, shape, dtype and what it is."""
    print(f"  {name:31s} {str(t.shape):14s} {t.dtype!s:8s} {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=ENGINES, default="numpy", help="kernel path")
    parser.add_argument("--quick", action="store_true", help="a batch of 2 instead of 8")
    args = parser.parse_args()
    cfg = validate(Config(engine=args.engine))  # the default model: preset `power`
    e, B = cfg.engine, 2 if args.quick else 8
    params, _ = init_params(cfg)
    (data,) = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    tokens, targets = data.train_x[:B], data.train_y[:B]
    C, NH = cfg.d_model, cfg.heads
    print(f"{cfg.tasks[0]} mod {cfg.p}: {cfg.layers} layers, d_model {C}, {NH} heads, ", end="")
    print(f"d_mlp {cfg.d_mlp}, {n_params(cfg):,} parameters, engine {e}\n")

    show("tokens", tokens, "[a, op, b, =] per example")
    x, _ = L.embedding_forward(tokens, {"wte": params["wte"], "wpe": params["wpe"]}, e)
    show("x = wte[tokens] + wpe", x, "(B, T, C) the residual stream")
    for i in range(cfg.layers):
        b = f"blocks.{i}"
        print(f"block {i}")
        h, _ = L.layernorm_forward(x, params.group(b + ".ln1"), e)
        show("h = ln1(x)", h, "(B, T, C) each position normalized over C")
        p_att = params.group(b + ".attn")
        att, _ = L.attention_forward(h, p_att, NH, e)
        if i == 0:  # the same attention, one step at a time
            qkv = L.affine(h.reshape(-1, C), p_att["w_qkv"], p_att["b_qkv"]).reshape(B, -1, 3 * C)
            show("  qkv = h @ w_qkv + b_qkv", qkv, "(B, T, 3C) queries, keys, values")
            # queries, and every row's key and value, read through each example's rows
            q, kv = qkv[..., :C].copy(), qkv[..., C:].reshape(-1, 2 * C).copy()
            y, a = attention_forward(q, kv, np.arange(kv.shape[0]).reshape(B, -1), NH, e)
            show("  a = softmax(q k^T / sqrt(HS))", a, "(B, NH, T, T) causal attention weights")
            show("  y = a @ v, heads merged", y, "(B, T, C)")
            y = L.affine(y.reshape(-1, C), p_att["w_o"], p_att["b_o"])
            show("  y @ w_o + b_o", y, "(B*T, C)")
            np.testing.assert_allclose(y.reshape(att.shape), att, rtol=1e-5, atol=1e-6)
            assert np.all(np.triu(a[0, 0], k=1) == 0), "no position attends to a later one"
            np.testing.assert_allclose(a.sum(axis=-1), 1, rtol=1e-5)
            print("    weights of example 0, head 0 (row: query position, column: key):")
            print("    " + np.array2string(a[0, 0], precision=2).replace("\n", "\n    "))
        show("attention(h)", att, "(B, T, C)")
        x = x + att
        show("x = x + attention(ln1(x))", x, "(B, T, C)")
        h2, _ = L.layernorm_forward(x, params.group(b + ".ln2"), e)
        m, _ = L.mlp_forward(h2.reshape(-1, C), params.group(b + ".mlp"), cfg.activation, e)
        show("mlp(ln2(x))", m, f"(B*T, C) via (B*T, F) = {cfg.activation}(h2 @ w_fc + b_fc)")
        x = x + m.reshape(x.shape)
        show("x = x + mlp(ln2(x))", x, "(B, T, C)")
    hf, _ = L.layernorm_forward(x, params.group("ln_f"), e)
    show("hf = ln_f(x)", hf, "(B, T, C)")
    logits_all, _ = L.linear_forward(hf.reshape(-1, C), params.group("head"))
    logits = logits_all.reshape(B, -1, cfg.p)[:, -1]
    show("logits = (hf @ head.w + head.b)[:, -1]", logits, "(B, P) the last position's scores")
    loss, _ = L.cross_entropy_forward(logits, targets, e)
    print(
        f"\nloss = mean cross-entropy = {loss:.4f} (log P = {np.log(cfg.p):.4f} for a blind guess)"
    )

    textbook, _ = model.forward(params, tokens, cfg)
    np.testing.assert_allclose(logits, textbook, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, fast.logits(params, tokens, cfg), rtol=1e-4, atol=1e-4)
    print("the logits match model.forward (every position) and fast.logits (what reaches the loss)")


if __name__ == "__main__":
    main()
