"""The sequence shapes as models: seq-to-vector, seq-to-seq, vector-to-seq, encoder–decoder.

A ``Model`` is ``init(key) -> params`` and ``apply(params, inputs, *, lengths=None, key=None)``;
an ``EncoderDecoder`` adds ``encode`` and ``decode_step`` for ``rnnjax.decoding``.
"""

from rnnjax.models._attention import AttentionCarry, attention_weights
from rnnjax.models._encoder_decoder import ATTENTIONS, BRIDGES, EncoderDecoder, encoder_decoder
from rnnjax.models._shapes import POOLS, Model, pool_steps, seq2seq, seq2vec, valid_mask, vec2seq

__all__ = [
    "ATTENTIONS",
    "BRIDGES",
    "POOLS",
    "AttentionCarry",
    "EncoderDecoder",
    "Model",
    "attention_weights",
    "encoder_decoder",
    "pool_steps",
    "seq2seq",
    "seq2vec",
    "valid_mask",
    "vec2seq",
]
