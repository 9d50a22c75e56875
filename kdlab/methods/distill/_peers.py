"""Shared part of the collaborative methods (DML, KDCL): students trained together, no pretrained teacher.

The run's model is the first student; the others ("peers") are submodules of the objective, so the loop's
optimizer trains them with the same settings and every checkpoint saves them.  Peers are built with
``build_model`` from ``peer`` (a registered model name, with ``peer_params``) or, by default, from the student's
own architecture.  All members see the same batch.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from pydantic import Field
from torch import Tensor

from kdlab.core.errors import ConfigError
from kdlab.core.registry import StrictParams
from kdlab.methods.base import Objective
from kdlab.methods.context import DistillContext
from kdlab.methods.distiller import LOGIT_STANDARDISE


class PeerParams(StrictParams):
    peer: str | None = Field(None, description="model of the peers (default: the student's architecture)")
    peer_params: dict[str, Any] = Field({}, description="parameters of the peer model")
    num_peers: int = Field(1, ge=1, description="peers trained with the student")
    logit_standardise: bool = LOGIT_STANDARDISE


class PeerObjective(Objective):
    def __init__(self, params: PeerParams, ctx: DistillContext):
        super().__init__()
        from kdlab.models import build_model

        student, data = ctx.student, ctx.data
        self.standardise = params.logit_standardise
        peer, peer_params, num_peers = params.peer, params.peer_params, params.num_peers
        if data is None:
            raise ConfigError("a collaborative method needs the data set (to build its peers)")
        if peer is None:
            spec = getattr(student, "kdlab_spec", None)
            if spec is None:
                raise ConfigError("method.peer: the student does not say how it was built; name the peer model")
            peer, peer_params = spec["name"], spec.get("params", {})
        self.peers = nn.ModuleList(
            build_model(peer, dict(peer_params or {}), data.num_classes, tuple(data.input_shape), key="method.peer")
            for _ in range(num_peers))

    def all_logits(self, model: nn.Module, x: Tensor) -> list[Tensor]:
        return [model(x)] + [p(x) for p in self.peers]
