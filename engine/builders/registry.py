"""The builder interface and the registry every caller asks: command line, jobs, API and catalog.

Each builder is one module (``busybox``, ``debian``) holding a :class:`Builder`
that declares its options (with their validation), the templates it offers
in the catalog, and how it builds; the module registers it with
:func:`register`. Nobody else names a builder: the CLI makes a sub-command
per registered builder, the API's choices are :func:`names`, the catalog's
"local" section is :func:`offers`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from engine.builders.common import Progress, check_cancel, default_template_dir
from engine.errors import ValidationError


@dataclass(frozen=True)
class Option:
    """One option a builder takes: its help text and default for the command line, the values it
    may take, and ``parse`` to check or normalise a given value (it raises ValidationError)."""

    name: str
    help: str
    default: object = None
    choices: tuple[str, ...] = ()
    parse: Callable[[object], object] | None = None
    cli: bool = True  # offered as --NAME by ``python -m engine.builders``


@dataclass(frozen=True)
class Offer:
    """A template a builder can make, listed in the catalog beside the downloadable ones."""

    builder: str
    name: str  # the catalog's name for it, e.g. debian-bookworm
    os: str
    options: dict = field(default_factory=dict)


class Builder(ABC):
    """A local template builder. Subclasses set ``name``, ``help`` and ``options``."""

    name: ClassVar[str]
    help: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()

    def takes(self, option: str) -> bool:
        return any(o.name == option for o in self.options)

    def check_options(self, options: dict) -> dict:
        """The options with each value checked by its :class:`Option`; an unknown one is refused by name."""
        allowed = [o.name for o in self.options]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValidationError(
                f"the {self.name} builder takes no option {', '.join(unknown)}"
                + (f" (it takes {', '.join(allowed)})" if allowed else ""),
                key=unknown[0],
            )
        checked = {}
        for option in self.options:
            if option.name in options:
                value = options[option.name]
                checked[option.name] = option.parse(value) if option.parse else value
        return checked

    def offers(self) -> list[Offer]:
        """What the catalog lists for this builder: by default the builder's own name, without options."""
        return [Offer(self.name, self.name, self.name)]

    def current_version(self, offer: Offer) -> str | None:
        """The version a build of ``offer`` would make now (None: not known before building); a stored
        archive of an older one is offered a rebuild (``engine.templates.updates``)."""
        return None

    def built_version(self, offer: Offer, archive: str) -> str | None:
        """The version of a stored archive this builder made for ``offer``; None if it is not one of those."""
        return None

    @abstractmethod
    def build(
        self, dest_dir: Path, options: dict, progress: Progress | None, cancel: threading.Event | None, force: bool
    ) -> Path:
        """Build into ``dest_dir`` with checked ``options``; return the template's path."""


_BUILDERS: dict[str, Builder] = {}


def register(builder: Builder) -> Builder:
    """Add a builder under its name (each builder module calls this once)."""
    _BUILDERS[builder.name] = builder
    return builder


def names() -> list[str]:
    """The registered builders' names, sorted."""
    return sorted(_BUILDERS)


def get(name: object) -> Builder:
    """The builder called ``name``; a ValidationError keyed ``builder`` lists the choices otherwise."""
    builder = _BUILDERS.get(name) if isinstance(name, str) else None
    if builder is None:
        raise ValidationError(f"builder: '{name}' is not a local builder ({', '.join(names())})", key="builder")
    return builder


def offers() -> list[Offer]:
    """Every template the registered builders offer, builder by builder."""
    return [offer for name in names() for offer in _BUILDERS[name].offers()]


def find_offer(name: str) -> Offer | None:
    """The offer the catalog lists as ``name``, if any."""
    return next((offer for offer in offers() if offer.name == name), None)


def build(
    name: str,
    dest: Path | str | None = None,
    options: dict | None = None,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    force: bool = False,
) -> Path:
    """Build the template ``name`` (a registered builder) into ``dest`` and return its path.

    ``dest`` defaults to the store's cache directory. ``options`` are the builder's own (its
    ``options``; ``python -m engine.builders NAME --help`` lists them). An existing template is
    returned as it is unless ``force``. ``progress`` and ``cancel`` are described in the
    package's documentation; a cancelled build raises :class:`engine.errors.Cancelled`.
    """
    builder = get(name)
    checked = builder.check_options(dict(options or {}))
    check_cancel(cancel)
    dest_dir = Path(dest) if dest is not None else default_template_dir()
    return builder.build(dest_dir, checked, progress, cancel, force)
