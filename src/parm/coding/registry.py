"""Discovery of coders through the entry-point groups ``parm.encoders`` and ``parm.decoders``.

Built-in coders register through the same groups a third-party distribution uses. Entry points are
read as strings and imported on first use, so a broken plugin only matters when it is asked for.
Set ``PARM_DISABLE_PLUGIN_AUTOLOAD=1`` to skip third-party entry points (the built-ins, registered by
this distribution, stay), as pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from parm import DISTRIBUTION
from parm.coding.base import Decoder, Encoder

AUTOLOAD_ENV = "PARM_DISABLE_PLUGIN_AUTOLOAD"
T = TypeVar("T", Encoder, Decoder)


class PluginError(RuntimeError):
    """A registered coder cannot be used (duplicate name, wrong type)."""


class PluginImportError(ImportError):
    """A plugin's entry point failed to import."""


def _origin(ep: EntryPoint) -> str:
    dist = ep.dist
    return f"distribution {dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def _dist_name(ep: EntryPoint) -> str:
    """The entry point's distribution, normalised as pip does (``Parity_Models`` -> ``parity-models``)."""
    return re.sub(r"[-_.]+", "-", ep.dist.name).lower() if ep.dist is not None else "unknown"


def _autoload_disabled() -> bool:
    return os.environ.get(AUTOLOAD_ENV, "").lower() in ("1", "true", "yes")


@dataclass
class Registry(Generic[T]):
    """Name -> coder class for one entry-point group.

    A name two distributions register is an error only when it is used; ``DIST:NAME`` (e.g.
    ``parity-models:sum``) picks one of them, and always works.

    Args:
        group: the entry-point group, e.g. ``"parm.encoders"``.
        kind: the coder kind in messages, e.g. ``"encoder"``.
        base: the class every coder of this group must subclass.
    """

    group: str
    kind: str
    base: type  # Encoder or Decoder; abstract, so not type[T]
    _entries: dict[str, EntryPoint | type[T]] = field(default_factory=dict)
    _conflicts: dict[str, list[EntryPoint]] = field(default_factory=dict)
    _qualified: dict[str, EntryPoint | type[T]] = field(default_factory=dict)
    _discovered: bool = False

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        builtin_only = _autoload_disabled()  # then only this distribution's own coders, the built-ins
        for ep in entry_points(group=self.group):
            if builtin_only and _dist_name(ep) != DISTRIBUTION:
                continue
            self._qualified.setdefault(f"{_dist_name(ep)}:{ep.name}", ep)
            known = self._entries.get(ep.name)
            if isinstance(known, EntryPoint) and known.value != ep.value:
                self._conflicts.setdefault(ep.name, [known]).append(ep)
            elif known is None:
                self._entries[ep.name] = ep

    def register(self, name: str, cls: type[T], override: bool = False) -> None:
        """Add a coder by hand (tests, notebooks). A taken name is refused unless ``override``."""
        self._discover()
        self._check_type(name, cls)
        if name in self._entries and not override:
            raise PluginError(
                f"{self.kind} name {name!r} is already registered ({self._describe(name)}); pass "
                f"override=True to replace it."
            )
        self._entries[name] = cls
        self._conflicts.pop(name, None)

    def unregister(self, name: str) -> None:
        """Remove a coder (missing names are ignored)."""
        self._entries.pop(name, None)
        self._conflicts.pop(name, None)

    def names(self) -> list[str]:
        """Installed names, sorted."""
        self._discover()
        return sorted(self._entries)

    def get(self, name: str) -> type[T]:
        """The class registered under ``name`` (or ``DIST:NAME``), importing its plugin on first use."""
        self._discover()
        if name in self._conflicts:
            choices = " or ".join(f"{self.kind}={_dist_name(ep)}:{name}" for ep in self._conflicts[name])
            raise PluginError(
                f"{self.kind} name {name!r} is registered by several plugins: "
                f"{'; '.join(f'{ep.value!r} from {_origin(ep)}' for ep in self._conflicts[name])}. Choose one by "
                f"its distribution: {choices} (code.{self.kind}=... in train.py), or uninstall all but one."
            )
        table = self._qualified if ":" in name else self._entries
        if name not in table:
            installed = ", ".join(self.names()) or "none"
            raise ValueError(
                f"unknown {self.kind} {name!r}; installed {self.kind}s: {installed}. A plugin adds one "
                f"through the entry-point group {self.group!r}."
            )
        entry = table[name]
        if isinstance(entry, EntryPoint):
            try:
                loaded = entry.load()
            except Exception as e:
                raise PluginImportError(
                    f"{self.kind} plugin {name!r} ({_origin(entry)}, entry point {entry.value!r} in group "
                    f"{self.group!r}) failed to import: {type(e).__name__}: {e}. Fix or uninstall that "
                    f"distribution, or set {AUTOLOAD_ENV}=1 to use only the built-in coders."
                ) from e
            self._check_type(name, loaded)
            table[name] = loaded
            entry = loaded
        return entry

    def _describe(self, name: str) -> str:
        entry = self._entries[name]
        if isinstance(entry, EntryPoint):
            return f"entry point {entry.value!r} from {_origin(entry)}"
        return f"{entry.__module__}.{entry.__qualname__}"

    def _check_type(self, name: str, obj: object) -> None:
        if not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise PluginError(
                f"{self.kind} plugin {name!r} resolved to {obj!r}, which is not a subclass of "
                f"{self.base.__module__}.{self.base.__qualname__}."
            )


encoders: Registry[Encoder] = Registry("parm.encoders", "encoder", Encoder)
decoders: Registry[Decoder] = Registry("parm.decoders", "decoder", Decoder)
