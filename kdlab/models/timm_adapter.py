"""The timm adapter: any model of timm's registry, seen through the feature contract.

    model: {name: timm, arch: resnet18}                         # weights: a local state-dict file (.pth/.safetensors)
    model: {name: timm, arch: resnet18.a1_in1k, pretrained: true}   # timm's released weights of that tag
    model: {name: timm, arch: convnext_atto, kwargs: {drop_path_rate: 0.1}, stages: [stages.1, stages.3]}

timm (``pip install 'kdlab[timm]'``) builds the model with the data set's class count and input channels
(``in_chans``) and ``kwargs``.  Nothing is downloaded unless the config asks: ``weights`` loads a file in timm's
key names (local, or ``hf-hub:ORG/REPO/FILE``, :mod:`kdlab.models.hub`), and ``pretrained: true`` timm's released
weights for the arch's tag (``resnet18.a1_in1k``; no tag: timm's default one, named in a log line), fetched
through the Hugging Face cache under the same rules as ``hf-hub:`` files (``HF_HUB_OFFLINE``, one-line errors).
timm then adapts them as it does for ``pretrained=True``: a class count other than the weights' gives a new
classifier (a log line says so), other input channels an adapted first convolution.  kwargs that would fetch or
load weights themselves are refused.

Stages are timm's own feature points (``model.feature_info``: its ``module`` names, e.g. ``act1, layer1 .. layer4``
for ResNets, one per block for vision transformers), all of them or those ``stages`` names.  Features come from
timm's ``forward_intermediates`` (the model's final features, then ``forward_head(pre_logits=True)`` for the
embedding and the classifier for the logits: one pass, checked at construction to give the model's logits);
``preact`` is ``stages``.  ``forward_from(i, h)`` cuts the model's FX graph after stage ``i - 1``, traced with
timm's list of modules and functions not to trace through (:mod:`kdlab.models.adapter`); a model FX cannot trace
runs its own forward with hooks instead, as the ``module`` adapter does.  Transformers' intermediates are token
grids reshaped to (N, C, H, W) without the class token, so ``forward_from`` is refused for them (checked at
construction, as for every adapter).  A model without ``forward_intermediates`` (older timm) is adapted like a
user module with timm's feature points as its stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import torch
import torch.nn as nn
from pydantic import BaseModel, Field
from torch import Tensor

from kdlab.core.errors import CheckpointError
from kdlab.core.log import logger
from kdlab.core.registry import MODELS, hint
from kdlab.models._weights import first_line, load_weights_file
from kdlab.models.adapter import (
    AdaptedModel,
    GraphRunner,
    HookedModel,
    HookRunner,
    RunOutput,
    Untraceable,
    check_stage_names,
    check_stages,
    probe_input,
    probe_model,
    torchvision_tracer_kwargs,
)
from kdlab.models.contract import ContractModel
from kdlab.models.hub import HubFile, NotOnHub, hub_file, offline
from kdlab.models.pretrained import BOTH, WeightsFile, param_error

TimmPretrained = Annotated[bool, Field(description="timm's released weights for the arch's tag (resnet18.a1_in1k; "
                                                   "no tag: timm's default), fetched into the Hugging Face cache")]

#: create_model arguments that fetch or load weights by themselves (kdlab fetches only what weights/pretrained name)
_REFUSED = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir",
            "features_only")


def timm_tracer_kwargs() -> dict[str, Any]:
    """torchvision's tracer defaults plus the modules and functions timm registers as not to be traced through
    (what ``timm.models.create_feature_extractor`` passes)."""
    from timm.models import get_notrace_functions, get_notrace_modules

    kwargs = torchvision_tracer_kwargs()
    kwargs["leaf_modules"] = list({*kwargs["leaf_modules"], *get_notrace_modules()})
    kwargs["autowrap_functions"] = tuple(get_notrace_functions())
    return kwargs


class TimmModel(AdaptedModel):
    """A timm classifier: features by ``forward_intermediates``, ``forward_from`` by its FX graph (or hooks)."""

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], num_classes: int,
                 stages: list[str] | None = None, label: str = "timm model"):
        super().__init__(net, input_shape, label)
        points = [f["module"] for f in net.feature_info]
        names = list(stages) if stages else points
        for n in names:
            if n not in points:
                h = hint(n, points)
                raise ValueError(f"{label}: stages: {n!r} is not one of its feature points ({', '.join(points)})"
                                 + (f"; {h}" if h else ""))
        check_stage_names(net, names, label)
        self._stage_names = names
        self._indices = [points.index(n) for n in names]
        if self._indices != sorted(set(self._indices)):
            raise ValueError(f"{label}: stages must be distinct feature points in the model's order "
                             f"({', '.join(points)})")
        head = net.get_classifier()
        if not isinstance(head, nn.Linear) or head.out_features != num_classes:
            raise ValueError(f"{label}: its classifier is {type(head).__name__}, not an nn.Linear with "
                             f"{num_classes} outputs; kdlab takes the input of the final linear classifier as the "
                             f"embedding")
        self._classifier_name = next(n for n, m in net.named_modules() if m is head)
        records, logits = probe_model(net, self.input_shape, num_classes, label)
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                final, outs = net.forward_intermediates(probe_input(self.input_shape), indices=self._indices)
                got = head(net.forward_head(final, pre_logits=True))
        finally:
            net.train(was_training)
        if not torch.allclose(got, logits, rtol=1e-4, atol=1e-5):
            raise ValueError(f"{label}: its classifier applied to forward_head(pre_logits=True) does not give its "
                             f"logits; use the module adapter instead (target: 'timm:create_model', kwargs: "
                             f"{{model_name: ...}}, stages: [...])")
        self.stage_channels = [o.shape[1] for o in outs]
        self._reshaped = {}
        for i, (name, out) in enumerate(zip(names[:-1], outs), start=1):
            own = records[name].out if name in records else None
            if isinstance(own, Tensor) and own.shape != out.shape:
                self._reshaped[i] = (f"forward_intermediates reshapes the output of {name!r} ({tuple(own.shape[1:])} "
                                     f"-> {tuple(out.shape[1:])}, e.g. a transformer's tokens without its class "
                                     f"token), so stage {i - 1}'s features are not the input of stage {i}")
        try:
            self._from: GraphRunner | HookRunner = GraphRunner(net, names, self._classifier_name,
                                                               timm_tracer_kwargs(), label)
        except Untraceable:
            check_stages(net, names, records, label)
            self._from = HookRunner(records, names, self._classifier_name, self.input_shape)
        self._blocked = self._verify(outs, logits)

    def _cannot_run_from(self, start: int) -> str:
        if start in self._reshaped:
            return self._reshaped[start]
        if isinstance(self._from, GraphRunner):
            return self._from.program(self.net.training, start)[1]
        return ""

    def _run(self, start: int, x: Tensor) -> RunOutput:
        if start == 0:
            final, outs = self.net.forward_intermediates(x, indices=self._indices)
            emb = self.net.forward_head(final, pre_logits=True)
            return self.classifier(emb), list(outs), list(outs), emb.flatten(1)
        if isinstance(self._from, HookRunner):
            return self._from.run(self.net, start, x)
        fn, why = self._from.program(self.net.training, start)
        if fn is None:
            raise self._refuse(start, why)
        logits, outs, _, emb = fn(self.net, x)
        # the graph's stage values are the modules' outputs, which is what forward_intermediates gives for the
        # convolutional models forward_from can run; pre-activations stay the outputs, as at start 0
        return logits, list(outs), list(outs), emb.flatten(1)


def _pretrained_cfg(arch: str) -> Any:
    """timm's pretrained config of ``arch``'s tag; a ValueError (listing the tags with weights) if it has none."""
    from timm.models import get_pretrained_cfg, list_pretrained

    try:
        cfg = get_pretrained_cfg(arch)
    except RuntimeError:  # a tag timm does not know
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        base = arch.partition(".")[0]
        tags = list_pretrained(f"{base}.*")
        raise ValueError(f"timm has no pretrained weights for {arch!r}"
                         + (f"; tags with weights: {', '.join(tags[:12])}" + (" ..." if len(tags) > 12 else "")
                            if tags else ""))
    return cfg


def _hub_candidates(filename: str | None) -> list[str]:
    # the files timm's load_state_dict_from_hf tries: a safetensors alternative first
    filename = filename or "pytorch_model.bin"
    if filename.endswith(".safetensors"):
        return [filename]
    safe = {"pytorch_model.bin": "model.safetensors", "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}
    alt = safe.get(filename) or (filename[:-4] + ".safetensors" if filename.endswith(".bin") else None)
    return [alt, filename] if alt else [filename]


def _pretrained_file(cfg: Any, what: str) -> tuple[HubFile, Path] | None:
    """timm's weights file on the hub and its local copy (fetched into the Hugging Face cache when not there), or
    None where timm loads them its own way (a URL, a custom loader)."""
    if not cfg.hf_hub_id or cfg.custom_load:
        return None
    repo, _, revision = cfg.hf_hub_id.partition("@")
    missing = None
    for name in _hub_candidates(cfg.hf_hub_filename):
        ref = HubFile(repo, name, revision or None)
        try:
            return ref, hub_file(ref, what)
        except NotOnHub as e:
            missing = missing or e
    raise missing


def _pretrained_net(timm: Any, arch: str, cfg: Any, num_classes: int, in_channels: int,
                    kwargs: dict[str, Any]) -> nn.Module:
    """timm's model of ``arch`` with the weights of ``cfg`` (its pretrained config), adapted by timm."""
    what = f"timm {arch}"
    tag = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    found = _pretrained_file(cfg, what)
    if found is None and offline() and cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if not cached.is_file():
            raise CheckpointError(f"{what}: timm fetches {tag}'s weights from {cfg.url}, not from the hub, and "
                                  f"HF_HUB_OFFLINE is set: put the file in {cached.parent} or unset HF_HUB_OFFLINE")
    source = str(found[0]) if found else cfg.url or cfg.hf_hub_id
    logger.info(f"{what}: pretrained weights {tag} from {source}")
    overlay = {"file": str(found[1])} if found else None
    try:
        net = timm.create_model(arch, pretrained=True, num_classes=num_classes, in_chans=in_channels,
                                pretrained_cfg_overlay=overlay, **kwargs)
    except (ValueError, TypeError):
        raise
    except Exception as e:  # noqa: BLE001 - network, hash and key-mismatch errors all end the same way
        raise CheckpointError(f"{what}: cannot load timm's {tag} weights ({source}): {first_line(e)}") from None
    if cfg.num_classes and num_classes != cfg.num_classes:
        head = next((n for n, m in net.named_modules() if m is net.get_classifier()), "classifier")
        logger.info(f"{what}: {tag} was trained on {cfg.num_classes} classes, the data have {num_classes}: the "
                    f"classifier {head} is new, the rest is {tag}")
    in_pretrained = (cfg.input_size or (3,))[0]
    if in_channels != in_pretrained:
        logger.info(f"{what}: {tag} takes {in_pretrained}-channel inputs, the data have {in_channels}: timm adapted "
                    "its first convolution")
    return net


def _check_arch(timm: Any, arch: str) -> None:
    if not timm.is_model(arch):
        h = hint(arch, timm.list_models())
        raise ValueError(f"arch {arch!r} is not a timm model" + (f"; {h}" if h else ""))


def _resolve_timm_params(params: BaseModel) -> BaseModel:
    if params.pretrained:
        if params.weights is not None:
            raise param_error(params, "pretrained", BOTH, params.pretrained)
        try:
            import timm
        except ImportError:
            return params  # building the model says so
        try:
            _check_arch(timm, params.arch)
            _pretrained_cfg(params.arch)
        except ValueError as e:
            raise param_error(params, "arch", str(e), params.arch) from None
    return params


@MODELS.register("timm", input="image", family="adapter", sample_shape=(3, 32, 32), example={"arch": "resnet10t"})
def timm_model(num_classes: int, in_channels: int, input_shape: tuple[int, ...], arch: str,
               weights: WeightsFile = None, pretrained: TimmPretrained = False, stages: list[str] | None = None,
               kwargs: dict[str, Any] | None = None) -> ContractModel:
    """Any timm model by name (arch), optionally with timm's released weights (pretrained) or a weights file.

    arch: a timm model name, with a pretrained tag after a dot if any (resnet18.a1_in1k)
    stages: names of timm's feature points used as the stages (default: all of them, forward_intermediates)
    kwargs: keyword arguments of timm.create_model (those that download or load weights are refused)
    """
    try:
        import timm
    except ImportError:
        raise ValueError("the timm adapter needs timm: pip install 'kdlab[timm]'") from None
    kwargs = dict(kwargs or {})
    refused = [k for k in _REFUSED if k in kwargs]
    if refused:
        raise ValueError(f"kwargs: {refused[0]!r} is not accepted: kdlab loads weights given as pretrained: true "
                         "(timm's released weights of the arch's tag) or weights (a local weights file or "
                         "hf-hub:ORG/REPO/FILE)")
    _check_arch(timm, arch)
    if pretrained and weights is not None:
        raise ValueError(f"pretrained: {BOTH}")
    if pretrained:
        try:
            cfg = _pretrained_cfg(arch)
        except ValueError as e:
            raise ValueError(f"pretrained: {e}") from None
        net = _pretrained_net(timm, arch, cfg, num_classes, in_channels, kwargs)
    else:
        net = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    if weights is not None:
        load_weights_file(net, weights, f"timm {arch}")
    label = f"timm model {arch!r}"
    if not hasattr(net, "forward_intermediates"):
        return HookedModel(net, input_shape, num_classes, stages or [f["module"] for f in net.feature_info], label)
    try:
        return TimmModel(net, input_shape, num_classes, stages, label)
    except NotImplementedError:  # a model whose forward_intermediates timm has not written yet
        return HookedModel(net, input_shape, num_classes, stages or [f["module"] for f in net.feature_info], label)


timm_model.resolve_params = _resolve_timm_params  # the tag is checked with the config
