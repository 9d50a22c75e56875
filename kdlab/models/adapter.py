"""Adapters: any torchvision classification model, or any user ``nn.Module``, seen through the feature contract.

    model: {name: torchvision, arch: mobilenet_v3_small}                  # weights: a local torchvision file
    model: {name: torchvision, arch: resnet18, pretrained: IMAGENET1K_V1}  # torchvision's released weights
    model: {name: module, target: "mypkg.nets:make_net", kwargs: {depth: 18}}

(and ``{name: timm, arch: resnet18}``, :mod:`kdlab.models.timm_adapter`).  ``target`` names a class or factory as
``package.module:attribute``; kdlab imports that module and calls the attribute with ``kwargs``, adding the data
set's ``num_classes`` when the signature names it or takes ``**kwargs`` (torchvision's and timm's factories) and
``in_channels`` when it names it.  The result must be an ``nn.Module`` whose forward returns the logits and whose
last linear layer is the classifier.  ``weights`` (every adapter) loads a local state-dict file in the wrapped
model's own key names (for torchvision: its released ``.pth`` files).  Every adapter keeps the wrapped module as
``model.net``, so its state dict is the module's own under ``net.``.

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

How features are computed: ``model(x)`` is always the wrapped module's own forward.

* torchvision models (:class:`GraphModel`) run their FX graph, traced with torchvision's feature-extraction tracer
  (``torchvision.models.feature_extraction``, the one behind ``create_feature_extractor``; node names as
  ``get_graph_node_names`` gives them), once in train and once in eval mode (a model may branch on
  ``self.training``).  A stage's output is the last node inside its module, as ``create_feature_extractor``
  resolves a module name; the graph returns the logits, every stage, each stage's pre-activation (the input of the
  stage's final ReLU when it ends in one, else the output itself) and the classifier's input.  ``forward_from(i, h)``
  runs the same graph cut after stage ``i - 1``: that node becomes the input ``h`` and everything only it needed
  is removed, so the stages before ``i`` neither run nor touch their batch-norm statistics.  If something after
  the cut still reads a value from before it (a connection that jumps over the stage boundary), ``forward_from(i)``
  raises a ConfigError naming the value.  Limits: the graph is the one traced in the wrapped module's own mode
  (submodules switched to another mode only change what their leaf layers do), and hooks on traced-through
  (non-leaf) submodules do not fire in it.  A model that FX cannot trace, or whose graph does not reproduce its
  probe, is adapted like a user module.
* user modules (:class:`HookedModel`) are run by their own forward, with forward hooks that capture the stage
  outputs and the classifier's input; an adapted model's ``preact`` is then its ``stages``.  ``forward_from(i, h)``
  also runs the module's own forward, on zeros, with hooks on the outermost modules that finish before stage ``i``
  starts: each runs without gradients and in eval mode (so its batch-norm statistics stay untouched) and its
  output is replaced by ``h`` (stage ``i - 1``) or by zeros of its recorded shape.  Unlike the graph cut this
  costs a forward of those modules (nothing for stages replaced by ``nn.Identity``, as SFTN's student branches
  do), and whatever the forward computes outside submodules before the boundary runs on the replaced values.
  In-place activation modules are switched off in every wrapped model, so that a captured output cannot be
  overwritten later in the forward; on this path functional in-place ops (``F.relu(x, inplace=True)``) still
  can (the graph path runs them out of place).

Whether ``forward_from`` reproduces the model is checked at construction on the probe input (eval mode); where it
does not, ``forward_from`` raises a ConfigError naming the model.  SFTN's student branches need ``forward_from`` on
the student.  No adapter assigns ``forward`` on the wrapped module's instances (the hook path only switches the
modules it skips to eval mode for the call, and restores their modes).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor

from kdlab.core.errors import ConfigError
from kdlab.core.log import logger
from kdlab.core.registry import MODELS, hint
from kdlab.models._weights import first_line, load_weights_file
from kdlab.models.contract import ContractModel, Features
from kdlab.models.pretrained import (
    BOTH,
    TorchvisionTag,
    WeightsFile,
    param_error,
    resolve_torchvision,
    torchvision_pretrained,
)
from kdlab.models.torchvision_resnet import TorchvisionResNet, set_stem

if TYPE_CHECKING:  # torch.fx and torchvision are imported when a graph is traced, not when kdlab starts
    import torch.fx as fx

#: what a run from stage ``start`` returns: logits, stages[start:], their pre-activations, the embedding
RunOutput = tuple[Tensor, list[Tensor], list[Tensor], Tensor]


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
        # a copy: a functional in-place op later in the forward (densenet's F.relu(..., inplace=True)) would
        # otherwise change the recorded output
        records[name].out = out.clone() if isinstance(out, Tensor) else out

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


def probe_input(input_shape: tuple[int, ...]) -> Tensor:
    return torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))


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


# -- stage discovery from a probe -------------------------------------------------------------------------------


def _children(net: nn.Module, name: str, records: dict[str, _Record]) -> list[str]:
    module = net.get_submodule(name)
    kids = [f"{name}.{c}" if name else c for c, _ in module.named_children()]
    return sorted((k for k in kids if k in records), key=lambda k: records[k].start)


def find_stages(net: nn.Module, records: dict[str, _Record], input_shape: tuple[int, ...], label: str) -> list[str]:
    rank = len(input_shape) + 1

    def feature_map(rec: _Record) -> bool:
        out = rec.out
        return rec.calls == 1 and isinstance(out, Tensor) and out.dim() == rank and _area(out.shape) > 1

    def chain(name: str) -> Iterator[str]:
        for child in _children(net, name, records):
            rec = records[child]
            kids = _children(net, child, records)
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
        raise ValueError(f"{label}: found {len(found)} feature-map stage(s) ({found}); name at least two "
                         f"submodules with stages: [...]")
    return found


def check_stage_names(net: nn.Module, names: list[str], label: str) -> None:
    known = [n for n, _ in net.named_modules() if n]
    for n in names:
        if n not in known:
            h = hint(n, known)
            raise ValueError(f"{label}: stages: no submodule {n!r}" + (f"; {h}" if h else ""))


def check_stages(net: nn.Module, names: list[str], records: dict[str, _Record], label: str) -> list[str]:
    check_stage_names(net, names, label)
    for n in names:
        rec = records.get(n)
        if rec is None or rec.calls != 1 or not isinstance(rec.out, Tensor):
            raise ValueError(f"{label}: stages: submodule {n!r} must run exactly once per forward and "
                             f"return a tensor")
    return list(names)


def find_classifier(net: nn.Module, records: dict[str, _Record], num_classes: int, label: str) -> str:
    linear = [n for n, r in records.items() if r.calls == 1 and isinstance(net.get_submodule(n), nn.Linear)
              and net.get_submodule(n).out_features == num_classes]
    if not linear:
        raise ValueError(f"{label}: no nn.Linear with {num_classes} outputs runs in its forward; kdlab "
                         f"takes the input of the final linear classifier as the embedding")
    return max(linear, key=lambda n: records[n].end)


def probe_model(net: nn.Module, input_shape: tuple[int, ...], num_classes: int,
                label: str) -> tuple[dict[str, _Record], Tensor]:
    """The probe's records and logits; a forward that fails or does not return logits is a ValueError."""
    try:
        records, logits = _probe(net, probe_input(input_shape))
    except Exception as e:  # noqa: BLE001 - the user's model decides what it raises
        raise ValueError(f"{label}: its forward fails on inputs of shape {tuple(input_shape)}: "
                         f"{first_line(e)}") from None
    if not isinstance(logits, Tensor) or tuple(logits.shape) != (1, num_classes):
        raise ValueError(f"{label}: its forward must return logits of shape (N, {num_classes}), got "
                         f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}")
    return records, logits


# -- forward_from by hooks on the module's own forward ----------------------------------------------------------


class HookRunner:
    """Runs a module's own forward with hooks: capture the stage outputs and the classifier's input, and (from stage
    ``start`` > 0) replace the outputs of the modules that finish before ``start`` (see the module docstring)."""

    def __init__(self, records: dict[str, _Record], stage_names: list[str], classifier_name: str,
                 input_shape: tuple[int, ...]):
        self.stage_names = list(stage_names)
        self.classifier_name = classifier_name
        self.input_shape = tuple(input_shape)
        self.skips = [self._skip_plan(records, n) for n in self.stage_names[:-1]]

    @staticmethod
    def _skip_plan(records: dict[str, _Record], stage: str) -> list[tuple[str, tuple[int, ...] | None]]:
        """The outermost modules that finish by the end of ``stage`` and do not contain it, with the shapes of the
        constants that replace their outputs (None for ``stage`` itself, whose output becomes the given tensor).
        Modules that return something else than a tensor are left alone."""
        parts = stage.split(".")
        ancestors = {".".join(parts[:i]) for i in range(len(parts))}
        end = records[stage].end
        return [(name, None if name == stage else tuple(rec.out.shape)) for name, rec in records.items()
                if name not in ancestors and rec.end <= end and name.rpartition(".")[0] in ancestors
                and isinstance(rec.out, Tensor)]

    def run(self, net: nn.Module, start: int, x: Tensor) -> tuple[Any, list[Tensor], list[Tensor], Tensor]:
        seen: dict[str, Tensor] = {}
        handles = [net.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, o))
                   for n in self.stage_names[start:]]
        handles.append(net.get_submodule(self.classifier_name).register_forward_pre_hook(
            lambda m, a: seen.__setitem__("", a[0])))
        grad = torch.is_grad_enabled()
        pending: list[tuple[bool, list[tuple[nn.Module, bool]]]] = []

        def quiet(module: nn.Module, _args: tuple) -> None:
            # its output is thrown away: no graph to build, and eval mode keeps its batch-norm statistics as they are
            pending.append((torch.is_grad_enabled(), [(m, m.training) for m in module.modules()]))
            torch.set_grad_enabled(False)
            module.eval()

        def replace(value: Tensor, _module: nn.Module, _args: tuple, _out: Any) -> Tensor:
            was_grad, modes = pending.pop()
            torch.set_grad_enabled(was_grad)
            for m, mode in modes:
                m.training = mode
            return value

        inp = x
        if start:
            batch = x.shape[0]
            inp = x.new_zeros((batch, *self.input_shape))
            for name, shape in self.skips[start - 1]:
                value = x if shape is None else x.new_zeros((batch, *shape[1:]))
                module = net.get_submodule(name)
                handles.append(module.register_forward_pre_hook(quiet))
                handles.append(module.register_forward_hook(lambda m, a, o, v=value: replace(v, m, a, o)))
        try:
            logits = net(inp)
        finally:
            for h in handles:
                h.remove()
            torch.set_grad_enabled(grad)
            for _, modes in pending:  # a module that raised before its forward hook ran
                for m, mode in modes:
                    m.training = mode
        outs = [seen[n] for n in self.stage_names[start:]]
        return logits, outs, list(outs), seen[""].flatten(1)


# -- forward and forward_from by an FX graph --------------------------------------------------------------------


class Untraceable(Exception):
    """The model's FX graph cannot be used (tracing fails, or the graph does not reproduce the model)."""


def torchvision_tracer_kwargs() -> dict[str, Any]:
    """torchvision's defaults for its feature-extraction tracer: its ops are leaves, ``math`` is wrapped."""
    import torchvision
    import torchvision.ops

    leaves = [obj for _, obj in inspect.getmembers(torchvision.ops)
              if inspect.isclass(obj) and issubclass(obj, nn.Module)]
    return {"autowrap_modules": (math, torchvision.ops), "leaf_modules": leaves}


def _is_relu(net: nn.Module, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(net.get_submodule(node.target), nn.ReLU)
    if node.op == "call_function":
        return node.target in (torch.relu, F.relu)
    return node.op == "call_method" and node.target == "relu"


def _has_side_effect(node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.is_impure(impure_random=False)
    return node.op == "call_method" and str(node.target).endswith("_") and not str(node.target).startswith("_")


def _compile(graph: fx.Graph) -> Any:
    """The graph as a Python function of the live root module: ``fn(root, *inputs)`` looks every submodule and
    parameter up on ``root`` at call time, so nothing is copied and device moves, loads and module replacements
    (SyncBatchNorm, SFTN's nn.Identity) apply to it as to the module's own forward."""
    code = graph.python_code(root_module="self")
    scope = dict(code.globals)
    exec(compile(code.src, "<kdlab fx graph>", "exec"), scope)  # noqa: S102 - code generated by torch.fx
    return scope["forward"]


class GraphRunner:
    """A module's FX graph, per mode, with the points of the contract marked; compiles on demand the program that
    runs from a stage (``start`` 0: the whole forward) and returns :data:`RunOutput`."""

    def __init__(self, net: nn.Module, stage_names: list[str], classifier_name: str,
                 tracer_kwargs: dict[str, Any], label: str):
        from torchvision.models.feature_extraction import NodePathTracer

        self.label = label
        # the classifier must be one node, whose input is the embedding: a subclass of nn.Linear defined outside
        # torch.nn (timm's) would otherwise be traced through
        head = type(net.get_submodule(classifier_name))
        tracer_kwargs = {**tracer_kwargs, "leaf_modules": [*tracer_kwargs.get("leaf_modules", []), head]}
        self.graphs: dict[bool, fx.Graph] = {}
        self.points: dict[bool, dict[str, Any]] = {}
        was_training = net.training
        try:
            for mode in (True, False):
                net.train(mode)
                tracer = NodePathTracer(**tracer_kwargs)
                try:
                    graph = tracer.trace(net)
                except Exception as e:  # noqa: BLE001 - whatever symbolic tracing hits in the model's code
                    raise Untraceable(f"torch.fx cannot trace it: {first_line(e)}") from None
                self.points[mode] = self._mark(net, graph, tracer.node_to_qualname, stage_names, classifier_name)
                self.graphs[mode] = graph
        finally:
            net.train(was_training)
        self._programs: dict[tuple[bool, int], tuple[Any, str]] = {}

    def _mark(self, net: nn.Module, graph: fx.Graph, qualnames: dict, stage_names: list[str],
              classifier_name: str) -> dict[str, Any]:
        import torch.fx as fx

        nodes = list(graph.nodes)
        for n in nodes:
            # a functional in-place activation would overwrite a value that the graph returns as a feature
            if n.op == "call_function" and n.kwargs.get("inplace") is True:
                n.kwargs = {**n.kwargs, "inplace": False}

        def last_in(module: str) -> fx.Node:
            # create_feature_extractor's rule for a module name: the last node whose path starts with it
            depth = module.count(".") + 1
            hits = [n for n in nodes if n in qualnames and ".".join(qualnames[n].split(".")[:depth]) == module]
            if not hits:
                raise Untraceable(f"no operation of submodule {module!r} appears in its FX graph")
            return hits[-1]

        stages = [last_in(m) for m in stage_names]
        preacts = [s.args[0] if _is_relu(net, s) and s.args and isinstance(s.args[0], fx.Node) else s
                   for s in stages]
        heads = [n for n in nodes if n.op == "call_module" and n.target == classifier_name]
        if len(heads) != 1 or not isinstance(heads[0].args[0], fx.Node):
            raise Untraceable(f"its classifier {classifier_name!r} is not called once on one value in its FX graph")
        out = next(n for n in nodes if n.op == "output").args[0]
        if not isinstance(out, fx.Node):
            raise ValueError(f"{self.label} returns {type(out).__name__}, not a logits tensor, in "
                             f"{'training' if net.training else 'eval'} mode (some torchvision models return "
                             f"auxiliary outputs: pass kwargs: {{aux_logits: false}})")
        names = {n: qualnames.get(n, n.name) for n in nodes}
        return {"stages": [n.name for n in stages], "preacts": [n.name for n in preacts],
                "embedding": heads[0].args[0].name, "logits": out.name, "qualnames": {n.name: q for n, q in
                                                                                      names.items()}}

    def program(self, training: bool, start: int) -> tuple[Any, str]:
        """(function, "") or (None, why the model cannot be run from ``start``)."""
        key = (training, start)
        if key not in self._programs:
            self._programs[key] = self._build(training, start)
        return self._programs[key]

    def _build(self, training: bool, start: int) -> tuple[Any, str]:
        graph = copy.deepcopy(self.graphs[training])
        points = self.points[training]
        nodes = {n.name: n for n in graph.nodes}
        order = {n: i for i, n in enumerate(graph.nodes)}
        x = next(n for n in graph.nodes if n.op == "placeholder")
        boundary = -1
        if start:
            cut = nodes[points["stages"][start - 1]]
            boundary = order[cut]
            with graph.inserting_before(x):
                h = graph.placeholder("h")
            cut.replace_all_uses_with(h)
        output = next(n for n in graph.nodes if n.op == "output")
        output.args = ((nodes[points["logits"]], tuple(nodes[n] for n in points["stages"][start:]),
                        tuple(nodes[n] for n in points["preacts"][start:]), nodes[points["embedding"]]),)
        # what runs before the cut only mattered through it: a side effect there (a shape assertion) goes too
        graph.eliminate_dead_code(is_impure_node=lambda n: n.op in ("placeholder", "output")
                                  or (order.get(n, -1) > boundary and _has_side_effect(n)))
        if start:
            if x.users:
                return None, self._crossing(graph, x, h, points["qualnames"], start)
            graph.erase_node(x)
        graph.lint()
        return _compile(graph), ""

    @staticmethod
    def _crossing(graph: fx.Graph, x: fx.Node, h: fx.Node, qualnames: dict[str, str], start: int) -> str:
        def downstream(root: fx.Node) -> set:
            seen, todo = set(), [root]
            while todo:
                for u in todo.pop().users:
                    if u not in seen:
                        seen.add(u)
                        todo.append(u)
            return seen

        after, before = downstream(h), downstream(x) | {x}
        crossing = sorted({qualnames.get(a.name, a.name) for n in after for a in n.all_input_nodes
                           if a in before and a not in after})
        return (f"the graph after stage {start - 1} also reads {', '.join(crossing[:3])} from before it "
                f"(a connection jumps over the stage boundary)")

    def __getstate__(self) -> dict[str, Any]:
        # compiled programs are plain functions made by exec: a copy or a pickle recompiles them from the graphs
        return {**self.__dict__, "_programs": {}}


# -- the adapted models -----------------------------------------------------------------------------------------


class AdaptedModel(ContractModel):
    """A module kdlab did not write (``self.net``), seen through the feature contract.  Subclasses set
    ``_stage_names``, ``_classifier_name``, ``stage_channels`` and ``_blocked`` and implement :meth:`_run`."""

    #: a module kdlab did not write may hold layers its forward never uses (under DDP: look for unused parameters)
    may_skip_parameters = True

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], label: str):
        super().__init__()
        self.net = net
        self.label = label
        self.input_shape = tuple(input_shape)
        for m in net.modules():
            if isinstance(getattr(m, "inplace", None), bool):
                m.inplace = False
        self._stage_names: list[str] = []
        self._classifier_name = ""
        self._blocked: dict[int, str] = {}

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

    def _run(self, start: int, x: Tensor) -> RunOutput:  # pragma: no cover - every subclass has one
        raise NotImplementedError

    def _cannot_run_from(self, start: int) -> str:
        """Why the model, in its current mode, cannot be run from stage ``start`` as it is built ("": it can)."""
        return ""

    def _refuse(self, start: int, why: str) -> ConfigError:
        return ConfigError(f"{self.label} cannot be run from stage {start} (forward_from, which SFTN's student "
                           f"branches need): {why}")

    def _verify(self, outs: list[Tensor], logits: Tensor) -> dict[int, str]:
        """Stage indices i for which ``forward_from(i, .)`` does not reproduce the model, with the reason."""
        blocked = {}
        was_training = self.training
        self.eval()
        with torch.no_grad():
            for i in range(1, len(outs)):
                why = self._cannot_run_from(i)
                if not why:
                    try:
                        got = self._output(self._run(i, outs[i - 1])[0])
                        why = "" if torch.allclose(got, logits, rtol=1e-4, atol=1e-4) else \
                            "the outputs differ (does a skip connection jump over a stage boundary?)"
                    except Exception as e:  # noqa: BLE001 - any failure means the model cannot be run from here
                        why = first_line(e)
                if why:
                    blocked[i] = why
        self.train(was_training)
        return blocked

    def _check_start(self, start: int) -> None:
        if not 0 <= start < len(self._stage_names):
            raise IndexError(f"{self.label}: stage index {start} out of range 0..{len(self._stage_names) - 1}")
        why = self._blocked.get(start) or (self._cannot_run_from(start) if start else "")
        if why:
            raise self._refuse(start, why)

    def forward(self, x: Tensor, features: bool = False) -> Tensor | Features:
        if not features:
            return self._output(self.net(x))
        logits, outs, pres, emb = self._run(0, x)
        return Features(self._output(logits), outs, pres, emb)

    def forward_stages(self, x: Tensor, start: int = 0) -> tuple[list[Tensor], list[Tensor]]:
        self._check_start(start)
        _, outs, pres, _ = self._run(start, x)
        return outs, pres

    def forward_from(self, start: int, h: Tensor) -> Tensor:
        if start == 0:
            return self._output(self.net(h))
        self._check_start(start)
        return self._output(self._run(start, h)[0])


class HookedModel(AdaptedModel):
    """An ``nn.Module`` classifier with stages found by a probe forward and features captured by hooks."""

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], num_classes: int,
                 stages: list[str] | None = None, label: str = "model"):
        super().__init__(net, input_shape, label)
        records, logits = probe_model(net, self.input_shape, num_classes, label)
        self._stage_names = (check_stages(net, stages, records, label) if stages
                             else find_stages(net, records, self.input_shape, label))
        self._classifier_name = find_classifier(net, records, num_classes, label)
        outs = [records[n].out for n in self._stage_names]
        self.stage_channels = [o.shape[1] for o in outs]
        self._runner = HookRunner(records, self._stage_names, self._classifier_name, self.input_shape)
        self._blocked = self._verify(outs, logits)

    def _run(self, start: int, x: Tensor) -> RunOutput:
        return self._runner.run(self.net, start, x)


class GraphModel(AdaptedModel):
    """A classifier run through its FX graph (see the module docstring); stages found by the probe, as for
    :class:`HookedModel`, or named."""

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], num_classes: int,
                 stages: list[str] | None = None, label: str = "model", tracer_kwargs: dict[str, Any] | None = None):
        super().__init__(net, input_shape, label)
        records, logits = probe_model(net, self.input_shape, num_classes, label)
        self._stage_names = (check_stages(net, stages, records, label) if stages
                             else find_stages(net, records, self.input_shape, label))
        self._classifier_name = find_classifier(net, records, num_classes, label)
        kwargs = torchvision_tracer_kwargs() if tracer_kwargs is None else tracer_kwargs
        self._graph = GraphRunner(net, self._stage_names, self._classifier_name, kwargs, label)
        outs = [records[n].out for n in self._stage_names]
        self._check_graph(probe_input(self.input_shape), logits, outs)
        self.stage_channels = [o.shape[1] for o in outs]
        self._blocked = self._verify(outs, logits)

    def _check_graph(self, x: Tensor, logits: Tensor, outs: list[Tensor]) -> None:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                got, stages, _, _ = self._run(0, x)
        finally:
            self.train(was_training)
        same = torch.allclose(got, logits, rtol=1e-4, atol=1e-5) and all(
            a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(stages, outs))
        if not same:
            raise Untraceable("its FX graph does not reproduce its forward")

    def _cannot_run_from(self, start: int) -> str:
        return self._graph.program(self.net.training, start)[1]

    def _run(self, start: int, x: Tensor) -> RunOutput:
        fn, why = self._graph.program(self.net.training, start)
        if fn is None:
            raise self._refuse(start, why)
        logits, outs, pres, emb = fn(self.net, x)
        return logits, list(outs), list(pres), emb.flatten(1)


def graph_or_hooked(net: nn.Module, input_shape: tuple[int, ...], num_classes: int, stages: list[str] | None,
                    label: str) -> AdaptedModel:
    """The FX adapter where the model's graph serves, else the hook adapter."""
    try:
        return GraphModel(net, input_shape, num_classes, stages, label)
    except Untraceable:
        return HookedModel(net, input_shape, num_classes, stages, label)


@MODELS.register("torchvision", input="image", family="adapter", sample_shape=(3, 64, 64),
                 example={"arch": "shufflenet_v2_x0_5"})
def torchvision_model(num_classes: int, in_channels: int, input_shape: tuple[int, ...], arch: str,
                      weights: WeightsFile = None, pretrained: TorchvisionTag = None,
                      stages: list[str] | None = None, kwargs: dict[str, Any] | None = None) -> ContractModel:
    """Any torchvision classification model by name (arch), optionally with torchvision's weights or a file.

    arch: a torchvision classification model's name (torchvision.models.list_models())
    stages: names of the submodules whose outputs are the feature stages (default: where the resolution halves)
    kwargs: keyword arguments of torchvision's builder
    """
    from torchvision import models as tvm

    _check_torchvision_arch(arch)
    if weights is not None and pretrained:
        raise ValueError(f"pretrained: {BOTH}")
    if pretrained and in_channels != 3:
        raise ValueError(f"pretrained: torchvision's weights take 3-channel images; the data have {in_channels} "
                         "channels")
    net = tvm.get_model(arch, weights=None, num_classes=num_classes, **(kwargs or {}))
    is_resnet = isinstance(net, tvm.ResNet)
    changes = [f"a {num_classes}-class head (stock: 1000)"] if num_classes != 1000 and not pretrained else []
    if is_resnet:
        if in_channels != 3:
            changes.append(f"a stem convolution for {in_channels}-channel images (stock: 3)")
        set_stem(net, in_channels, small_input=False)
    elif in_channels != 3:
        raise ValueError(f"torchvision's {arch} takes 3-channel images; the data have {in_channels} channels")
    if weights is not None:
        load_weights_file(net, weights, f"torchvision {arch}")
    if pretrained:
        net = torchvision_pretrained(net, arch, pretrained, dict(kwargs or {}), f"torchvision {arch}")
    if changes:  # kdlab export writes these layers as they are here: the stock model would not load them
        logger.info(f"torchvision {arch}: built with {' and '.join(changes)}")
    if is_resnet and stages is None:
        # its stage modules then hold the stem's and each layer's parameters (initialisation stages train them)
        return TorchvisionResNet(net)
    return graph_or_hooked(net, input_shape, num_classes, stages, label=f"torchvision model {arch!r}")


def _check_torchvision_arch(arch: str) -> None:
    from torchvision import models as tvm

    names = tvm.list_models(module=tvm)
    if arch not in names:
        h = hint(arch, names)
        raise ValueError(f"arch {arch!r} is not a torchvision classification model" + (f"; {h}" if h else ""))


def _resolve_torchvision_params(params: BaseModel) -> BaseModel:
    if params.pretrained not in (None, False):
        try:
            _check_torchvision_arch(params.arch)
        except ValueError as e:
            raise param_error(params, "arch", str(e), params.arch) from None
    return resolve_torchvision(params, params.arch)


torchvision_model.resolve_params = _resolve_torchvision_params  # the tag is checked and resolved with the config


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
    """Any nn.Module classifier given as target 'package.module:factory_or_class' with kwargs.

    target: 'package.module:factory_or_class' (importable; called with kwargs, num_classes and in_channels where
      it takes them)
    kwargs: keyword arguments of the factory
    weights: a local state-dict file of the module, loaded strictly
    stages: names of the submodules whose outputs are the feature stages (default: where the resolution halves)
    """
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
        load_weights_file(net, weights, f"module {target!r}")
    # a user's forward may do what symbolic tracing cannot follow or silently bakes in (Python-level randomness,
    # data-dependent branches), so the module runs its own forward and hooks observe it
    return HookedModel(net, input_shape, num_classes, stages, label=f"module {target!r}")
