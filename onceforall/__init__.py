"""onceforall: train once-for-all supernets with DεpS; evaluate, search and export subnets.

>>> import random, onceforall as ofa
>>> space = ofa.get_space("mbv3-cifar", width_mult=0.5, resolutions=(32,))
>>> a = space.sample(random.Random(0))
>>> space.parse(str(a)) == a
True
"""

from .bn import recalibrate_bn
from .spaces import Arch, Space, Stage, get_space, list_spaces, make_divisible, register_space
from .subnet import Subnet, build_subnet
from .supernet import Supernet, build_supernet

__version__ = "0.1.0"

__all__ = [
    "Arch",
    "Space",
    "Stage",
    "Subnet",
    "Supernet",
    "build_subnet",
    "build_supernet",
    "get_space",
    "list_spaces",
    "make_divisible",
    "recalibrate_bn",
    "register_space",
]
