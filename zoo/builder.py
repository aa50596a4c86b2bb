"""Building zoo models through timm, with official weights loaded safely.

timm's own loader unpickles local files without ``weights_only`` and cannot read official
files that pickle training args. ``build_zoo_model`` therefore fetches and loads the file
itself (``zoo.checkpoint``), hands the state dict to timm through the pretrained cfg's
``state_dict`` entry, and lets timm do the rest (the family's filter, ``in_chans`` and
``num_classes`` adaptation, ``features_only`` wrapping). Before the strict load, the
converted weights are checked against the model so that a file for another variant fails
with the keys named.

timm's ``img_size`` argument works on every model: a model whose constructor takes it
(the plain ViTs: the position-embedding grid) gets it, and every model records it as its
default input size (``pretrained_cfg['input_size']``, which timm's data config reads, and
``model.img_size``), as timm's models do.
"""
from __future__ import annotations

import dataclasses
import inspect
from urllib.parse import urlparse

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, resolve_pretrained_cfg

from .checkpoint import CheckpointError, check_state_dict, load_state_dict
from .registry import meta_model

__all__ = ['build_zoo_model', 'resolve_weights_file', 'download_url', 'download_hf', 'matching_variants']

# Hosts whose share links open a web page (sign-in, virus-scan or captcha pages), never the file.
MANUAL_DOWNLOAD_HOSTS = ('drive.google.com', 'pan.baidu.com')


def download_url(url: str) -> str:
    """Download ``url`` into torch's hub cache (once) and return the local path."""
    from timm.models._hub import download_cached_file
    return download_cached_file(url, check_hash=False, progress=True)


def download_hf(repo_id: str, filename: str) -> str:
    """Download ``filename`` of the Hugging Face Hub repo ``repo_id`` (cached) and return its path.

    ``repo_id`` may name a revision as timm's cfgs do (``'timm/name.tag@revision'``).
    """
    from huggingface_hub import hf_hub_download
    repo_id, _, revision = repo_id.partition('@')
    return hf_hub_download(repo_id, filename=filename, revision=revision or None)


# timm's hub repos ('timm/<name>.<tag>') name no file in their cfgs: timm loads this one.
TIMM_HUB_FILENAME = 'model.safetensors'


def _manual_download_error(variant: str, cfg: dict[str, Any], reason: str) -> CheckpointError:
    page = cfg.get('origin_url') or cfg.get('url') or 'the official repository'
    name = f"{variant}.{cfg.get('tag')}" if cfg.get('tag') else variant
    return CheckpointError(
        f'{reason}\nDownload the weights of {name} from {page}, then load the file with\n'
        f"    timm.create_model('{variant}', pretrained=True, "
        f"pretrained_cfg_overlay=dict(file='/path/to/the/file'))")


def resolve_weights_file(variant: str, cfg: dict[str, Any]) -> str:
    """Return a local path for the weights a pretrained cfg points at, downloading if needed.

    Order as in timm: ``file``, then ``hf_hub_id`` (+ ``hf_hub_filename``, else timm's
    ``model.safetensors``), then ``url``. Hosts with no direct download (Google Drive, Baidu)
    have none of these; the error names the page (``origin_url``) and the
    ``pretrained_cfg_overlay=dict(file=...)`` call to use.
    """
    if cfg.get('file'):
        return str(cfg['file'])
    host = urlparse(cfg.get('url') or '').hostname
    if host in MANUAL_DOWNLOAD_HOSTS and not cfg.get('hf_hub_id'):  # a web page: downloading gives HTML
        raise _manual_download_error(variant, cfg, f'{variant} has no direct download: its weights are on {host}.')
    try:
        if cfg.get('hf_hub_id'):
            return download_hf(cfg['hf_hub_id'], cfg.get('hf_hub_filename') or TIMM_HUB_FILENAME)
        if cfg.get('url'):
            return download_url(cfg['url'])
    except CheckpointError:
        raise
    except Exception as e:  # network errors come in many types (requests, urllib, hf_hub)
        raise _manual_download_error(
            variant, cfg, f'could not download the weights of {variant} ({type(e).__name__}: {e}).') from e
    raise _manual_download_error(
        variant, cfg, f'{variant} has no direct download of its official weights.')


def matching_variants(state_dict: dict[str, torch.Tensor], filter_fn: Callable | None,
                       variant: str | None) -> list[str]:
    """The variants of ``variant``'s family whose parameter shapes the file fits exactly."""
    if not variant:
        return []
    import timm
    from timm.models import model_entrypoint
    module = model_entrypoint(variant).__module__
    matches = []
    for name in timm.list_models():
        if name == variant or model_entrypoint(name).__module__ != module:
            continue
        candidate = meta_model(name)  # shapes only: no memory, no init
        try:
            converted = filter_fn(state_dict, candidate) if filter_fn is not None else state_dict
            check_state_dict(candidate, converted)
        except Exception:
            continue
        matches.append(name)
    return matches


def _checking_filter(filter_fn: Callable | None, what: str) -> Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]:
    def filter_and_check(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        # The state dict travelled in the cfg only to reach this point: drop it so the model
        # (and the features wrapper, which deep-copies the cfg) does not keep a second copy.
        cfg.pop('state_dict', None)
        raw_state_dict = state_dict
        if filter_fn is not None:
            state_dict = filter_fn(state_dict, model)
        classifiers = cfg.get('classifier') or ()
        classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
        first_convs = cfg.get('first_conv') or ()
        first_convs = (first_convs,) if isinstance(first_convs, str) else tuple(first_convs)
        num_classes = getattr(model, 'num_classes', cfg.get('num_classes'))
        replace_head = num_classes != cfg.get('num_classes')

        def expected_mismatch(key: str) -> bool:
            # timm adapts these after the filter: a new head, or a stem for other in_chans.
            if replace_head and any(key.startswith(c + '.') for c in classifiers):
                return True
            return any(key == c + '.weight' for c in first_convs)

        try:
            check_state_dict(model, state_dict, ignore=expected_mismatch, what=what)
        except CheckpointError as e:
            matches = matching_variants(raw_state_dict, filter_fn, cfg.get('architecture'))
            if matches:
                raise CheckpointError(f'{e}\n  The file fits {", ".join(matches)}.') from None
            raise
        return state_dict

    return filter_and_check


def _img_size_pair(img_size: Any) -> tuple[int, int]:
    """``img_size`` as timm takes it (an int or an ``(H, W)`` pair) -> ``(H, W)``, or a clear error."""
    pair = (img_size, img_size) if isinstance(img_size, int) else img_size
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)):
        raise ValueError(f'img_size must be a positive int or an (H, W) pair of positive ints, got {img_size!r}')
    return int(pair[0]), int(pair[1])


def _record_img_size(model_cls: type[nn.Module], variant: str, kwargs: dict[str, Any]) -> tuple[int, int] | None:
    """Handle timm's ``img_size`` argument in ``kwargs`` (in place); return ``(H, W)`` if given.

    Models of any input size have no size in their architecture, so their constructors do not
    take it; for them it only sets the default input size. A constructor that does take it
    (position-embedding grids) still gets it. Either way the pretrained cfg records it through
    ``pretrained_cfg_overlay`` (timm copies the cfg into ``features_only`` wrappers too); the
    channel count stays the cfg's, as timm's input-conv adaptation reads it as the weights'.
    """
    if kwargs.get('img_size') is None:
        kwargs.pop('img_size', None)
        return None
    h, w = _img_size_pair(kwargs['img_size'])
    if 'img_size' not in inspect.signature(model_cls).parameters:
        del kwargs['img_size']
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get('pretrained_cfg'),
                                 pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'))
    channels = cfg.input_size[0] if cfg is not None else 3
    kwargs['pretrained_cfg_overlay'] = {**(kwargs.get('pretrained_cfg_overlay') or {}), 'input_size': (channels, h, w)}
    return h, w


def build_zoo_model(
        model_cls: type[nn.Module],
        variant: str,
        pretrained: bool = False,
        *,
        pretrained_filter_fn: Callable | None = None,
        feature_cfg: dict[str, Any] | None = None,
        **kwargs: Any,
) -> nn.Module:
    """``timm.models.build_model_with_cfg`` with safe, checked loading of official weights.

    Args:
        model_cls: the model class.
        variant: the registered model name (without tag).
        pretrained: load the weights the pretrained cfg points at.
        pretrained_filter_fn: the family's ``checkpoint_filter_fn`` (official layout -> ours).
        feature_cfg: timm feature cfg (e.g. ``dict(out_indices=..., feature_cls='getter')``).
        **kwargs: model arguments plus timm's (``pretrained_cfg``, ``pretrained_cfg_overlay``,
            ``features_only``, ``out_indices``, ``num_classes``, ``in_chans``, ``img_size``...). A
            ``checkpoint_key`` selects the wrapper key of the file (e.g. ``'model_ema'``).
    """
    checkpoint_key = kwargs.pop('checkpoint_key', None)
    img_size = _record_img_size(model_cls, variant, kwargs)
    if pretrained:
        cfg = resolve_pretrained_cfg(
            variant,
            pretrained_cfg=kwargs.pop('pretrained_cfg', None),
            pretrained_cfg_overlay=kwargs.pop('pretrained_cfg_overlay', None),
        )
        what = f'{variant}.{cfg.tag}' if cfg.tag else variant
        if cfg.state_dict is None:
            path = resolve_weights_file(variant, dataclasses.asdict(cfg))
            cfg = dataclasses.replace(cfg, state_dict=load_state_dict(path, key=checkpoint_key))
            what = f'checkpoint {path}'
        kwargs['pretrained_cfg'] = cfg
        pretrained_filter_fn = _checking_filter(pretrained_filter_fn, what)
    model = build_model_with_cfg(
        model_cls, variant, pretrained,
        pretrained_filter_fn=pretrained_filter_fn,
        feature_cfg=feature_cfg,
        **kwargs,
    )
    if img_size is not None:
        # features_only wraps the model: its minimum input size is the wrapped model's
        min_size = getattr(getattr(model, 'model', model), 'min_input_size', None)
        if min_size is not None and min(img_size) < min_size:
            raise ValueError(f'img_size {img_size[0]}x{img_size[1]} is below the smallest input {variant} '
                             f'takes ({min_size}x{min_size})')
        if not hasattr(model, 'img_size'):
            model.img_size = img_size  # the default input size, where timm's models keep it
    return model
