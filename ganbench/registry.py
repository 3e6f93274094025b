"""Discovery of the small classes (losses, penalties) that config files name.

Adding a loss or a penalty is one class file in its package plus one YAML: the package's modules are
imported here and every subclass with a ``name`` is registered under it.
"""
import importlib
import pkgutil
from types import ModuleType
from typing import Dict, Type, TypeVar

T = TypeVar("T")


def discover(package: ModuleType, base: Type[T]) -> Dict[str, Type[T]]:
    """Import every module of ``package`` and map ``cls.name`` to each concrete subclass of ``base``."""
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    found: Dict[str, Type[T]] = {}
    stack = list(base.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.name != base.name:
            found[cls.name] = cls
    return dict(sorted(found.items()))
