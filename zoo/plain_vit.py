"""The timm interface shared by plain (single-resolution) ViTs: what ``StagedModel`` is for
hierarchical models, for models whose "stages" are the blocks of one stride-16 token grid.

A model using :class:`PlainViTMixin` (next to ``nn.Module``) provides ``blocks`` (a
``ModuleList``), ``norm`` (the final norm), ``head``, ``embed_dim``, ``global_pool``,
``grad_checkpointing`` and the class attributes ``GLOBAL_POOLS`` (the accepted ``global_pool``
values) and ``STEM_PATTERN`` (the regex of its embedding parameters, for ``group_matcher``).
``forward_intermediates`` is :class:`zoo.staged.FeatureIntermediates`' loop, over the blocks;
``forward_features`` runs the same hooks over every block. The model writes the hooks (its
token sets differ: a class token, compressed tokens...) and ``forward_head``:

- ``_forward_stem(x)``: check the input, embed; returns the state the blocks pass on.
- ``_forward_stage(index, block, state)``: run one block (gradient checkpointing included).
- ``_patch_tokens(state)``: the ``(B, N, C)`` patch tokens and their ``(h, w)`` grid; a
  selected block's map is these tokens (through ``norm`` if asked) as a map.
- ``_forward_end(state, complete)``: the normalised token sequence of ``forward_features``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from timm.models._features import feature_take_indices

from zoo.staged import FeatureIntermediates

__all__ = ['PlainViTMixin']


class PlainViTMixin(FeatureIntermediates):
    GLOBAL_POOLS: tuple[str, ...] = ('avg', '')
    STEM_PATTERN: str = r'^pos_embed|^patch_embed'

    @property
    def stages(self) -> nn.ModuleList:
        """The blocks, under the name that hierarchical models (and the mm adapter's users) use."""
        return self.blocks

    def _check_pool(self, global_pool: str) -> str:
        if global_pool not in self.GLOBAL_POOLS:
            raise ValueError(f'global_pool must be one of {self.GLOBAL_POOLS}, got {global_pool!r}')
        return global_pool

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=self.STEM_PATTERN, blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = self._check_pool(global_pool)
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool | None = None,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks, the head and the final norm that the intermediates do not need.

        ``prune_norm=None`` (default) drops the final norm together with the head: it only
        feeds the head unless ``forward_intermediates(norm=True)`` is used, and a parameter
        without gradient breaks distributed training of dense models (mm backbones).
        """
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm or (prune_norm is None and prune_head):
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def _patch_tokens(self, state: Any) -> tuple[torch.Tensor, tuple[int, int]]:
        raise NotImplementedError

    def _intermediate(self, index: int, state: Any, norm: bool, output_fmt: str) -> torch.Tensor:
        """The patch tokens as a map (other tokens dropped), through the final norm if ``norm``.

        NCHW maps are views of the tokens in the channels-last layout, not copies: the tokens
        are kept for the backward pass anyway, and a copy per returned block would add one
        map per block to a training step's peak (convolutions take either layout).
        """
        tokens, (gh, gw) = self._patch_tokens(state)
        y = (self.norm(tokens) if norm else tokens).reshape(tokens.shape[0], gh, gw, tokens.shape[-1])
        return y if output_fmt == 'NHWC' else y.permute(0, 3, 1, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised token sequence after every block (what ``forward_head`` takes)."""
        state = self._forward_stem(x)
        for i, block in enumerate(self.blocks):
            state = self._forward_stage(i, block, state)
        return self._forward_end(state, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
