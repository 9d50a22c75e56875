"""Distillation methods (registered in :data:`kdlab.registry.DISTILL_METHODS`); every module here is loaded."""

from ..._autoload import import_submodules

import_submodules(__name__, __path__)
