"""Text classifiers over ``(batch, length)`` token indices (``<pad>`` = 1), with the feature contract
(``forward_features`` / ``forward_head`` / ``get_classifier``) so feature detectors work on them unchanged."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from oe_lightning.data.text.vocabulary import PAD_INDEX


class LinearHead(nn.Module):
    """The feature contract's head, for a model with ``forward_features`` and a final ``self.linear``."""

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x if pre_logits else self.linear(x)

    def get_classifier(self) -> nn.Module:
        return self.linear

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class GRUClassifier(LinearHead):
    """The reference's text classifier (hendrycks/outlier-exposure NLP_classification/train.py:113-125,
    ``ClfGRU``): a 50-dimensional embedding (the ``<pad>`` row zero), a 2-layer unidirectional GRU of 128
    units over the whole padded sequence (no packing: with ``<pad>`` before the text the last step is the last
    word), the top layer's final state into a linear layer. Parameter names are the reference's, so its
    ``model.dict`` files load with ``vocab_size`` set to their embedding rows (10,002 for SST and 20 Newsgroups,
    8,679 for TREC)."""

    def __init__(self, num_classes: int, vocab_size: int = 10_002, embedding_dim: int = 50, hidden_size: int = 128,
                 num_layers: int = 2, pad_index: int = PAD_INDEX):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_index)
        self.gru = nn.GRU(input_size=embedding_dim, hidden_size=hidden_size, num_layers=num_layers, bias=True,
                          batch_first=True, bidirectional=False)
        self.linear = nn.Linear(hidden_size, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """The top GRU layer's state after the last step, ``(batch, hidden_size)``."""
        return self.gru(self.embedding(x))[1][-1]


class TransformerTextClassifier(LinearHead):
    """A small Transformer encoder: token + position embeddings, ``num_layers`` pre-norm encoder layers that
    never attend to ``<pad>``, the mean of the text's token states as features, a linear head. Positions count
    from each text's first token (so ``<pad>`` before or after the text, and how much of it, change nothing);
    positions past ``max_length`` share the last position embedding."""

    def __init__(self, num_classes: int, vocab_size: int = 10_002, d_model: int = 128, nhead: int = 4,
                 num_layers: int = 2, dim_feedforward: int = 256, dropout: float = 0.1, max_length: int = 512,
                 pad_index: int = PAD_INDEX):
        super().__init__()
        self.pad_index, self.max_length = pad_index, max_length
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_index)
        self.position = nn.Embedding(max_length, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.linear = nn.Linear(d_model, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """The mean of the last layer's states over the text's tokens, ``(batch, d_model)``."""
        real = x != self.pad_index
        empty = ~real.any(1, keepdim=True)
        last = torch.arange(x.shape[1], device=x.device) == x.shape[1] - 1
        real = real | (empty & last)  # an empty text: its last <pad> counts as one token
        positions = (real.long().cumsum(1) - 1).clamp(0, self.max_length - 1)
        h = self.encoder(self.embedding(x) + self.position(positions), src_key_padding_mask=~real)
        h = self.norm(h) * real.unsqueeze(-1)
        return h.sum(1) / real.sum(1, keepdim=True)
