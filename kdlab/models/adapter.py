"""Adapters: any torchvision classification model, or any user ``nn.Module``, seen through the feature contract.

    model: {name: torchvision, arch: mobilenet_v3_small}                  # weights: a local torchvision file
    model: {name: module, target: "mypkg.nets:make_net", kwargs: {depth: 18}}

``target`` names a class or factory as ``package.module:attribute``; kdlab imports that module and calls the
attribute with ``kwargs``, adding the data set's ``num_classes`` when the signature names it or takes ``**kwargs``
(torchvision's and timm's factories) and ``in_channels`` when it names it.  The result must be an ``nn.Module`` whose
forward returns the logits and whose last linear layer is the classifier.  ``weights`` (both adapters) loads a
local state-dict file in the wrapped model's own key names (for torchvision: its released ``.pth`` files).

How stages are found.  torchvision ResNets (ResNet, ResNeXt, wide ResNets) are wrapped explicitly, like kdlab's
``imagenet_resnet*``: stem, ``layer1`` .. ``layer4``, with true pre-activations.  Any other model is run once at
construction (eval mode, no gradients) on a random input of the data set's shape, with hooks on every submodule;
then, starting from the model itself, every submodule that changes the resolution by more than one halving (or does
not return a feature map) is replaced by its children, in call order.  The resulting chain of modules is grouped
by output resolution, and each group's last module is a stage: one stage per resolution, the first (before any
downsampling, or at the first reduced resolution) being the stem.  Modules called more than once, outputs of 1x1
resolution (squeeze-excitation gates, global pools) and outputs that are not feature maps of the input's rank are
ignored, as are modules whose output is larger than an earlier stage's (e.g. VGG's 7x7 adaptive pool on small
inputs).  For torchvision's ``mobilenet_v3_small`` this gives ``features.0, .1, .3, .8, .12``.  Alternatively
``stages: [name, ...]`` lists the submodules explicitly (see ``model.net.named_modules()``), which is the way for
models without feature maps (vision transformers) or with a last stage of 1x1.  The classifier is the last
``nn.Linear`` with ``num_classes`` outputs; the embedding is its input (after any dropout the model applies).

Hooks see module outputs only, so an adapted model's ``preact`` is its ``stages``.  In-place activations are
switched off in the wrapped model so that a captured stage output cannot be overwritten later in the forward.

``forward_from(i, h)`` re-runs the model's own forward with every module that finishes before stage ``i`` starts
replaced by a constant (stage ``i - 1`` returns ``h``, the others a zero tensor of their recorded shape), so the
skipped modules cost nothing and their batch-norm statistics are untouched.  Whether this reproduces the model is
checked at construction on the probe input; where it does not (e.g. a skip connection that jumps over a stage
boundary), ``forward_from`` raises a ConfigError naming the model.  SFTN's student branches need ``forward_from``
on the student.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import ConfigError
from ..registry import MODELS, hint
from ._weights import first_line, load_weights
from .contract import ContractModel, Features
from .torchvision_resnet import TorchvisionResNet, set_stem


@dataclass
class _Record:
    start: int
    end: int = -1
    calls: int = 0
    in_shape: tuple[int, ...] | None = None
    out: Any = None


def _probe(net: nn.Module, x: Tensor) -> tuple[dict[str, _Record], Any]:
    """Run ``net`` once in eval mode, recording for every submodule its call order, calls, input shape, output."""
    records: dict[str, _Record] = {}
    clock = itertools.count()

    def pre(name: str, _m: nn.Module, args: tuple) -> None:
        rec = records.setdefault(name, _Record(next(clock)))
        rec.calls += 1
        if args and isinstance(args[0], Tensor):
            rec.in_shape = tuple(args[0].shape)

    def post(name: str, _m: nn.Module, _args: tuple, out: Any) -> None:
        records[name].end = next(clock)
        records[name].out = out

    handles = []
    for name, m in net.named_modules():
        if name:
            handles.append(m.register_forward_pre_hook(lambda m, a, n=name: pre(n, m, a)))
            handles.append(m.register_forward_hook(lambda m, a, o, n=name: post(n, m, a, o)))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            logits = net(x)
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return records, logits


def _area(shape: tuple[int, ...]) -> int:
    return math.prod(shape[2:])


class _StageView(nn.ModuleList):
    """The stage modules of a wrapped model, by name.  Registering them in the adapter too would duplicate them in
    its state dict, so this list is built on demand; assigning an item replaces the module inside the wrapped model
    (SFTN's branches replace the stages they never run by ``nn.Identity``)."""

    def __init__(self, net: nn.Module, names: list[str]):
        super().__init__([net.get_submodule(n) for n in names])
        self.__dict__["_owner"] = (net, names)  # kept out of the module tree

    def __setitem__(self, idx: int, module: nn.Module) -> None:
        net, names = self.__dict__["_owner"]
        net.set_submodule(names[idx], module)
        super().__setitem__(idx, module)


class HookedModel(ContractModel):
    """An ``nn.Module`` classifier with stages found by a probe forward (see the module docstring)."""

    #: a module kdlab did not write may hold layers its forward never uses (under DDP: look for unused parameters)
    may_skip_parameters = True

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], num_classes: int,
                 stages: list[str] | None = None, label: str = "model"):
        super().__init__()
        self.net = net
        self.label = label
        self.input_shape = tuple(input_shape)
        for m in net.modules():
            if isinstance(getattr(m, "inplace", None), bool):
                m.inplace = False
        x = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
        try:
            records, logits = _probe(net, x)
        except Exception as e:  # noqa: BLE001 - the user's model decides what it raises
            raise ValueError(f"{label}: its forward fails on inputs of shape {tuple(input_shape)}: "
                             f"{first_line(e)}") from None
        if not isinstance(logits, Tensor) or tuple(logits.shape) != (1, num_classes):
            raise ValueError(f"{label}: its forward must return logits of shape (N, {num_classes}), got "
                             f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}")
        self._stage_names = self._check_stages(stages, records) if stages else self._find_stages(records)
        self._classifier_name = self._find_classifier(records, num_classes)
        outs = [records[n].out for n in self._stage_names]
        self.stage_channels = [o.shape[1] for o in outs]
        self._skips = [self._skip_plan(records, n) for n in self._stage_names[:-1]]
        self._blocked = self._verify(outs, logits)

    # -- construction ---------------------------------------------------------------------------------------------

    def _children(self, name: str, records: dict[str, _Record]) -> list[str]:
        module = self.net.get_submodule(name)
        kids = [f"{name}.{c}" if name else c for c, _ in module.named_children()]
        return sorted((k for k in kids if k in records), key=lambda k: records[k].start)

    def _find_stages(self, records: dict[str, _Record]) -> list[str]:
        rank = len(self.input_shape) + 1

        def feature_map(rec: _Record) -> bool:
            out = rec.out
            return rec.calls == 1 and isinstance(out, Tensor) and out.dim() == rank and _area(out.shape) > 1

        def chain(name: str) -> Iterator[str]:
            for child in self._children(name, records):
                rec = records[child]
                kids = self._children(child, records)
                one_step = (feature_map(rec) and rec.in_shape is not None and len(rec.in_shape) == rank
                            and _area(rec.in_shape) <= 2 ** (rank - 2) * _area(rec.out.shape))
                if one_step or (feature_map(rec) and not kids):
                    yield child
                else:
                    yield from chain(child)

        found: list[str] = []
        areas: list[int] = []
        for name in chain(""):
            a = _area(records[name].out.shape)
            if areas and a > areas[-1]:
                continue
            if areas and a == areas[-1]:
                found[-1] = name
            else:
                found.append(name)
                areas.append(a)
        if len(found) < 2:
            raise ValueError(f"{self.label}: found {len(found)} feature-map stage(s) ({found}); name at least two "
                             f"submodules with stages: [...]")
        return found

    def _check_stages(self, names: list[str], records: dict[str, _Record]) -> list[str]:
        known = [n for n, _ in self.net.named_modules() if n]
        for n in names:
            if n not in known:
                h = hint(n, known)
                raise ValueError(f"{self.label}: stages: no submodule {n!r}" + (f"; {h}" if h else ""))
            rec = records.get(n)
            if rec is None or rec.calls != 1 or not isinstance(rec.out, Tensor):
                raise ValueError(f"{self.label}: stages: submodule {n!r} must run exactly once per forward and "
                                 f"return a tensor")
        return list(names)

    def _find_classifier(self, records: dict[str, _Record], num_classes: int) -> str:
        linear = [n for n, r in records.items() if r.calls == 1 and isinstance(self.net.get_submodule(n), nn.Linear)
                  and self.net.get_submodule(n).out_features == num_classes]
        if not linear:
            raise ValueError(f"{self.label}: no nn.Linear with {num_classes} outputs runs in its forward; kdlab "
                             f"takes the input of the final linear classifier as the embedding")
        return max(linear, key=lambda n: records[n].end)

    @staticmethod
    def _skip_plan(records: dict[str, _Record], stage: str) -> list[tuple[str, tuple[int, ...] | None]]:
        """The outermost modules that finish by the end of ``stage`` and do not contain it, with the shapes of the
        constants that replace them (None for ``stage`` itself, which returns the given tensor).  Modules that
        return something else than a tensor are left to run."""
        parts = stage.split(".")
        ancestors = {".".join(parts[:i]) for i in range(len(parts))}
        end = records[stage].end
        return [(name, None if name == stage else tuple(rec.out.shape)) for name, rec in records.items()
                if name not in ancestors and rec.end <= end and name.rpartition(".")[0] in ancestors
                and isinstance(rec.out, Tensor)]

    def _verify(self, outs: list[Tensor], logits: Tensor) -> dict[int, str]:
        """Stage indices i for which ``forward_from(i, .)`` does not reproduce the model, with the reason."""
        blocked = {}
        was_training = self.training
        self.eval()
        with torch.no_grad():
            for i in range(1, len(outs)):
                try:
                    ok = torch.allclose(self._run_from(i, outs[i - 1]), logits, rtol=1e-4, atol=1e-4)
                    why = "" if ok else "the outputs differ (does a skip connection jump over a stage boundary?)"
                except Exception as e:  # noqa: BLE001 - any failure means the model cannot be run from here
                    why = first_line(e)
                if why:
                    blocked[i] = why
        self.train(was_training)
        return blocked

    # -- the contract ---------------------------------------------------------------------------------------------

    @property
    def stages(self) -> _StageView:  # type: ignore[override]
        return _StageView(self.net, self._stage_names)

    @property
    def classifier(self) -> nn.Linear:  # type: ignore[override]
        return self.net.get_submodule(self._classifier_name)

    def _output(self, out: Any) -> Tensor:
        if not isinstance(out, Tensor):
            raise TypeError(f"{self.label} returned {type(out).__name__}, not a logits tensor (in training mode "
                            f"some torchvision models return auxiliary outputs: pass kwargs: {{aux_logits: false}})")
        return out

    @contextmanager
    def _capturing(self) -> Iterator[dict[str, Tensor]]:
        """Collect the stage outputs (by name) and the classifier's input (key "") of the forwards run inside.
        The hooks live only this long, so copies and pickles of the model carry none."""
        seen: dict[str, Tensor] = {}

        def keep(name: str, value: Tensor) -> None:
            seen[name] = value

        handles = [self.net.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: keep(n, o))
                   for n in self._stage_names]
        handles.append(self.classifier.register_forward_pre_hook(lambda m, a: keep("", a[0])))
        try:
            yield seen
        finally:
            for h in handles:
                h.remove()

    def forward(self, x: Tensor, features: bool = False) -> Tensor | Features:
        if not features:
            return self._output(self.net(x))
        with self._capturing() as seen:
            logits = self._output(self.net(x))
        outs = [seen[n] for n in self._stage_names]
        return Features(logits, outs, list(outs), seen[""].flatten(1))

    def forward_stages(self, x: Tensor, start: int = 0) -> tuple[list[Tensor], list[Tensor]]:
        with self._capturing() as seen:
            self.forward_from(start, x)
        outs = [seen[n] for n in self._stage_names[start:]]
        return outs, list(outs)

    def forward_from(self, start: int, h: Tensor) -> Tensor:
        if start == 0:
            return self._output(self.net(h))
        if not 0 < start < len(self._stage_names):
            raise IndexError(f"{self.label}: stage index {start} out of range 0..{len(self._stage_names) - 1}")
        if start in self._blocked:
            raise ConfigError(f"{self.label} cannot be run from stage {start} (forward_from, which SFTN's student "
                              f"branches need): {self._blocked[start]}")
        return self._run_from(start, h)

    def _run_from(self, start: int, h: Tensor) -> Tensor:
        patched = []
        try:
            for name, shape in self._skips[start - 1]:
                value = h if shape is None else h.new_zeros((h.shape[0], *shape[1:]))
                module = self.net.get_submodule(name)
                module.forward = lambda *a, _v=value, **k: _v
                patched.append(module)
            return self._output(self.net(h.new_zeros((h.shape[0], *self.input_shape))))
        finally:
            for module in patched:
                del module.forward


@MODELS.register("torchvision", input="image", family="adapter", sample_shape=(3, 64, 64),
                 example={"arch": "shufflenet_v2_x0_5"})
def torchvision_model(num_classes: int, in_channels: int, input_shape: tuple[int, ...], arch: str,
                      weights: str | None = None, stages: list[str] | None = None,
                      kwargs: dict[str, Any] | None = None) -> ContractModel:
    """Any torchvision classification model by name (arch), optionally with local torchvision weights."""
    from torchvision import models as tvm

    names = tvm.list_models(module=tvm)
    if arch not in names:
        h = hint(arch, names)
        raise ValueError(f"arch {arch!r} is not a torchvision classification model" + (f"; {h}" if h else ""))
    net = tvm.get_model(arch, weights=None, num_classes=num_classes, **(kwargs or {}))
    is_resnet = isinstance(net, tvm.ResNet)
    if is_resnet:
        set_stem(net, in_channels, small_input=False)
    elif in_channels != 3:
        raise ValueError(f"torchvision's {arch} takes 3-channel images; the data have {in_channels} channels")
    if weights is not None:
        load_weights(net, weights, f"torchvision {arch}")
    if is_resnet and stages is None:
        return TorchvisionResNet(net)
    return HookedModel(net, input_shape, num_classes, stages, label=f"torchvision model {arch!r}")


def _resolve(target: str) -> Any:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"target must look like 'package.module:factory', got {target!r}")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import {module_name!r} (target {target!r}): {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name!r} has no attribute {attr!r} (target {target!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"target {target!r} is not callable")
    return obj


@MODELS.register("module", input="any", family="adapter", sample_shape=(3, 64, 64),
                 example={"target": "torchvision.models:resnet18"})
def user_module(num_classes: int, in_channels: int, input_shape: tuple[int, ...], target: str,
                kwargs: dict[str, Any] | None = None, weights: str | None = None,
                stages: list[str] | None = None) -> HookedModel:
    """Any nn.Module classifier given as target 'package.module:factory_or_class' with kwargs."""
    factory = _resolve(target)
    kwargs = dict(kwargs or {})
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    # num_classes is the common convention (torchvision and timm factories take it through **kwargs);
    # in_channels is not, so it is only passed to callables that name it
    if "num_classes" not in kwargs and ("num_classes" in accepted or open_kwargs):
        kwargs["num_classes"] = num_classes
    if "in_channels" not in kwargs and "in_channels" in accepted:
        kwargs["in_channels"] = in_channels
    net = factory(**kwargs)
    if not isinstance(net, nn.Module):
        raise ValueError(f"target {target!r} returned {type(net).__name__}, not an nn.Module")
    if weights is not None:
        load_weights(net, weights, f"module {target!r}")
    return HookedModel(net, input_shape, num_classes, stages, label=f"module {target!r}")
