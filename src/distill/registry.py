"""Decorator registries: one per kind of thing a config can name.

Configs may only instantiate names registered here, never import strings:

    @METHODS.register("ode-pairs", paper="...", summary="...")
    class OdePairs(Method): ...

`distill list` prints every registry with its one-line summaries and papers.

The built-in components register when their modules are imported; the registries import them
on first lookup, by name, from `BUILTIN_MODULES` (and any installed package that declares a
`distill.plugins` entry point), so that importing `distill.config` or `distill.runner` loads no
family until a name is looked up, and no module imports the registry's users back.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from distill.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: the object, a one-line summary and the paper it implements."""

    name: str
    obj: T
    summary: str
    paper: str


def closest(name: str, choices: list[str]) -> str | None:
    """The registered name most like `name`, or None when nothing is close."""
    found = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return found[0] if found else None


class Registry(Generic[T]):
    """A named table of registered objects (classes or factories)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, summary: str, paper: str = "") -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, summary, paper)
            return obj

        return decorator

    def names(self) -> list[str]:
        _import_builtins()
        return sorted(self._entries)

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            _import_builtins()
        if name not in self._entries:
            hint = closest(name, self.names())
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{did_you_mean} Registered {self.kind}s: "
                f"{', '.join(self.names())}."
            )
        return self._entries[name]

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def __contains__(self, name: object) -> bool:
        _import_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())


# The modules whose import registers the built-in components: shared teacher sources and
# datasets, then one registration module per family (its task, methods, backbones, teachers).
BUILTIN_MODULES = (
    "distill.teachers",
    "distill.data",
    "distill.diffusion.register",
    "distill.kd.register",
    "distill.lm.register",
    "distill.render.register",
)
PLUGIN_GROUP = "distill.plugins"  # entry points of other packages: modules to import likewise
# A family's own command group (`distill lm ...`) as "module:attribute" of a typer app, imported
# only when the command is named; other packages add theirs as `distill.commands` entry points.
FAMILY_COMMANDS = {"lm": "distill.lm.cli:lm_app"}
COMMAND_GROUP = "distill.commands"
_loaded = False


def _import_builtins() -> None:
    """Register the built-in components (and plugins) on first lookup, so any entry point (a
    bare `load_denoiser`, say) sees every name a config or a saved run can use."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # before importing: a module may look a name up while it registers
    try:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        from importlib.metadata import entry_points

        for point in entry_points(group=PLUGIN_GROUP):
            point.load()
    except BaseException:
        _loaded = False
        raise


def family_commands() -> dict[str, Callable[[], Any]]:
    """Command name -> a loader of its typer app, for the families' own command groups."""
    from importlib.metadata import entry_points

    def loader(target: str) -> Callable[[], Any]:
        module, _, attribute = target.partition(":")
        return lambda: getattr(importlib.import_module(module), attribute)

    found = {name: loader(target) for name, target in FAMILY_COMMANDS.items()}
    found.update({point.name: point.load for point in entry_points(group=COMMAND_GROUP)})
    return found


METHODS: Registry[Any] = Registry("method")
DATASETS: Registry[Any] = Registry("dataset")
MODELS: Registry[Any] = Registry("model")
TEACHERS: Registry[Any] = Registry("teacher source")
TASKS: Registry[Any] = Registry("task")
