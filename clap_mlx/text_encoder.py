"""RoBERTa text tower: transformers' `ClapTextModel` (embeddings, post-LN encoder, tanh pooler).

Module and attribute names follow transformers' parameter names (`encoder.layer.N.attention.self.query`,
`LayerNorm`, ...) so PyTorch checkpoints load without renaming.

A batch of labels is padded to its longest; the encoder runs only the real tokens ("packed"
rows: every matmul, layer norm and GELU skips the padding, e.g. 37% of the rows of the
benchmark's 32 labels) and lays them out padded only inside attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from . import linear_ops, ops, text_fused
from .config import TextConfig
from .derived import DerivedArrays


def position_ids_from_input_ids(input_ids: mx.array, padding_idx: int) -> mx.array:
    """RoBERTa positions: padding tokens get `padding_idx`, the others count up from `padding_idx + 1`."""
    not_pad = (input_ids != padding_idx).astype(mx.int32)
    return mx.cumsum(not_pad, axis=1) * not_pad + padding_idx


def additive_attention_mask(attention_mask: mx.array) -> mx.array:
    """[B, L] 1/0 mask -> [B, 1, 1, L] bias: 0 for kept keys, float32 min for padding (as transformers)."""
    keep = attention_mask.astype(mx.bool_)[:, None, None, :]
    return mx.where(keep, 0.0, mx.finfo(mx.float32).min)


class TextEmbeddings(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.padding_idx = cfg.pad_token_id
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = ops.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def __call__(self, input_ids: mx.array) -> mx.array:
        positions = position_ids_from_input_ids(input_ids, self.padding_idx)
        # CLAP never passes token_type_ids: every token has type 0.
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.LayerNorm(x + self.token_type_embeddings.weight[0])


@dataclass(frozen=True)
class TokenLayout:
    """Where a padded [batch, length] batch's computed tokens sit as packed rows.

    Computed: every token the mask keeps, plus position 0 of each sequence (the pooler
    reads it whatever the mask says, as transformers does)."""

    batch: int
    length: int
    tokens: mx.array | None  # [N] flat padded positions of the packed rows; None: no padding
    padded_rows: mx.array | None  # [batch * length] packed row of each position, N for padding
    first_rows: mx.array  # [batch] packed row of each sequence's first token
    mask: mx.array  # [batch, 1, 1, length] additive attention mask

    @classmethod
    def from_mask(cls, attention_mask: mx.array) -> TokenLayout:
        keep = np.array(attention_mask).astype(bool)
        batch, length = keep.shape
        computed = keep.copy()
        computed[:, 0] = True
        mask = additive_attention_mask(attention_mask)
        if computed.all():
            return cls(batch, length, None, None, mx.arange(batch) * length, mask)
        tokens = np.flatnonzero(computed.reshape(-1))
        padded_rows = np.full(batch * length, tokens.size)
        padded_rows[tokens] = np.arange(tokens.size)
        first_rows = padded_rows[np.arange(batch) * length]
        return cls(batch, length, mx.array(tokens), mx.array(padded_rows), mx.array(first_rows), mask)

    def pack(self, x: mx.array) -> mx.array:
        """[batch, length, D] -> packed [N, D]."""
        rows = x.reshape(-1, x.shape[-1])
        return rows if self.tokens is None else rows[self.tokens]

    def unpack(self, rows: mx.array) -> mx.array:
        """Packed [N, D] -> [batch, length, D], zeros at padding."""
        if self.padded_rows is not None:
            rows = mx.concatenate([rows, mx.zeros((1, rows.shape[-1]), rows.dtype)])[self.padded_rows]
        return rows.reshape(self.batch, self.length, -1)


class SelfAttention(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(
                f"TextConfig: hidden_size {cfg.hidden_size} is not a multiple of "
                f"num_attention_heads {cfg.num_attention_heads}"
            )
        self.num_heads = cfg.num_attention_heads
        self.query = linear_ops.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = linear_ops.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = linear_ops.Linear(cfg.hidden_size, cfg.hidden_size)

    def __call__(self, x: mx.array, layout: TokenLayout, first_tokens: mx.array | None = None) -> mx.array:
        """Attention over all tokens of packed x [N, D] for every row of x, or only for
        `first_tokens` (x's first-token row of each sequence, [B, D]) when given."""
        batch, dims = layout.batch, x.shape[-1]
        head_dims = dims // self.num_heads

        def heads(t: mx.array) -> mx.array:
            return t.reshape(batch, -1, self.num_heads, head_dims).transpose(0, 2, 1, 3)

        first_only = first_tokens is not None
        # the projections of the same rows run as one op (one evaluation of their input)
        if first_only:
            q, (k, v) = heads(self.query(first_tokens)), linear_ops.linears(x, [self.key, self.value])
        else:
            q, k, v = linear_ops.linears(x, [self.query, self.key, self.value])
            q = heads(layout.unpack(q))
        k, v = heads(layout.unpack(k)), heads(layout.unpack(v))
        scores = (q * head_dims**-0.5) @ k.transpose(0, 1, 3, 2) + layout.mask
        out = (ops.softmax(scores, donate=True) @ v).transpose(0, 2, 1, 3).reshape(batch, -1, dims)
        return out.reshape(batch, dims) if first_only else layout.pack(out)


class ResidualOutput(nn.Module):
    """dense -> add residual -> LayerNorm (BERT's post-LN `*Output` blocks)."""

    def __init__(self, in_dims: int, out_dims: int, eps: float):
        super().__init__()
        self.dense = linear_ops.Linear(in_dims, out_dims)
        self.LayerNorm = ops.LayerNorm(out_dims, eps=eps)

    def __call__(self, x: mx.array, residual: mx.array) -> mx.array:
        return self.LayerNorm(self.dense(x), residual)


class Attention(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = ResidualOutput(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps)

    def __call__(self, x: mx.array, layout: TokenLayout, first_only: bool) -> mx.array:
        # The first-token rows are gathered once: the queries and the residual of that attention.
        first_tokens = x[layout.first_rows] if first_only else None
        residual = x if first_tokens is None else first_tokens
        return self.output(self.self(x, layout, first_tokens), residual)


class Intermediate(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.dense = linear_ops.Linear(cfg.hidden_size, cfg.intermediate_size)

    def __call__(self, x: mx.array) -> mx.array:
        return linear_ops.linear_gelu(self.dense, x)


class TransformerLayer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = ResidualOutput(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)

    def __call__(self, x: mx.array, layout: TokenLayout, first_only: bool = False) -> mx.array:
        """New states of packed x's rows, or of each sequence's first token only."""
        h = self.attention(x, layout, first_only)
        return self.output(self.intermediate(h), h)


class Encoder(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.layer = [TransformerLayer(cfg) for _ in range(cfg.num_hidden_layers)]
        self._derived = DerivedArrays()

    def fused_params(self) -> text_fused.EncoderParams:
        """The layers for the host path (text_fused.py), built once per set of weights."""

        def arrays(layer: TransformerLayer) -> tuple[mx.array | None, ...]:
            attention, output = layer.attention, layer.output
            modules = (attention.self.query, attention.self.key, attention.self.value, attention.output.dense,
                       attention.output.LayerNorm, layer.intermediate.dense, output.dense, output.LayerNorm)
            return tuple(m.get(name) for m in modules for name in ("weight", "bias"))

        def build(*_sources: mx.array) -> text_fused.EncoderParams:
            heads, eps = self.layer[0].attention.self.num_heads, self.layer[0].output.LayerNorm.eps
            return text_fused.EncoderParams(tuple(text_fused.LayerParams(arrays(lay), heads, eps) for lay in self.layer))

        sources = tuple(a for layer in self.layer for a in arrays(layer) if a is not None)
        return self._derived.get("host", sources, build, evaluate=False)

    def per_op(self, x: mx.array, layout: TokenLayout) -> mx.array:
        """The encoder op by op (each op on its own path): the path of a GPU and of many rows."""
        for layer in self.layer[:-1]:
            x = layer(x, layout)
        return self.layer[-1](x, layout, first_only=True)

    def __call__(self, x: mx.array, layout: TokenLayout) -> mx.array:
        """Packed token states [N, D] -> final states of each sequence's first token [B, D]: all
        the pooler reads, so the last layer computes only those rows. A few rows run on the host
        kernels (text_fused.py), others op by op."""
        return text_fused.run_encoder(x, layout, self.fused_params, lambda: self.per_op(x, layout))


class Pooler(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.dense = linear_ops.Linear(cfg.hidden_size, cfg.hidden_size)

    def __call__(self, first_tokens: mx.array) -> mx.array:
        return ops.tanh(self.dense(first_tokens))


class RobertaTextEncoder(nn.Module):
    """input_ids [B, L] int32, attention_mask [B, L] (1 = token, 0 = padding) -> pooled [B, hidden]."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        if cfg.hidden_act != "gelu":
            raise ValueError(f'TextConfig: hidden_act {cfg.hidden_act!r} is not supported (only "gelu")')
        self.vocab_size = cfg.vocab_size
        # RoBERTa positions start after padding_idx, so fewer tokens fit than position embeddings.
        self.max_length = cfg.max_position_embeddings - cfg.pad_token_id - 1
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = Encoder(cfg)
        self.pooler = Pooler(cfg)

    def check_inputs(self, input_ids: mx.array, attention_mask: mx.array) -> None:
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"input_ids {list(input_ids.shape)} and attention_mask {list(attention_mask.shape)} "
                "must both be [batch, length]"
            )
        if input_ids.shape[1] > self.max_length:
            raise ValueError(f"input_ids: {input_ids.shape[1]} tokens, the text tower takes at most {self.max_length}")
        if input_ids.size and not 0 <= mx.min(input_ids).item() <= mx.max(input_ids).item() < self.vocab_size:
            raise ValueError(f"input_ids: token ids must be in [0, {self.vocab_size}) (the checkpoint's vocab_size)")

    def __call__(self, input_ids: mx.array, attention_mask: mx.array) -> mx.array:
        self.check_inputs(input_ids, attention_mask)
        layout = TokenLayout.from_mask(attention_mask)
        return self.pooler(self.encoder(layout.pack(self.embeddings(input_ids)), layout))
