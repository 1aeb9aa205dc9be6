"""onceforall: train once-for-all supernets with DεpS; evaluate, search and export subnets.

>>> import random, onceforall as ofa
>>> space = ofa.get_space("mbv3-cifar", width_mult=0.5, resolutions=(32,))
>>> a = space.sample(random.Random(0))
>>> space.parse(str(a)) == a
True

Layers (each imports only from those below it): ``core`` (archs, spaces, supernet, subnet, step, strategies)
and ``data`` -> ``specialize`` (predictor and search, export files, latency tables) -> ``run`` (config,
checkpoints, run directory) -> ``measure`` (the cache of measured subnets, candidates, the search's predictor,
cost functions) -> ``workflows`` (train, eval, search, export, compare, ...) -> ``cli``.
See docs/design.md.
"""

from .core.arch import Arch, make_divisible
from .core.bn import recalibrate_bn
from .core.registry import get_space, list_spaces, register_space
from .core.space import Space, Stage
from .core.subnet import Subnet, build_subnet
from .core.supernet import Supernet, build_supernet
from .core.version import __version__
from .run.ofa_import import load_ofa_supernet
from .run.rundir import load_run
from .specialize.evolution import evolutionary_search, nsga2_search
from .specialize.export import export_subnet, load_preprocess, load_subnet, verify_export
from .specialize.memory import peak_memory
from .specialize.predictor import AccuracyPredictor

__all__ = [
    "AccuracyPredictor",
    "Arch",
    "Space",
    "Stage",
    "Subnet",
    "Supernet",
    "__version__",
    "build_subnet",
    "build_supernet",
    "evolutionary_search",
    "export_subnet",
    "get_space",
    "list_spaces",
    "load_run",
    "load_ofa_supernet",
    "load_preprocess",
    "load_subnet",
    "make_divisible",
    "nsga2_search",
    "peak_memory",
    "recalibrate_bn",
    "register_space",
    "verify_export",
]
