"""The version guard of the contrib parts: change a library only where it was tested.

Each part of :mod:`progrock.contrib` changes a third-party library through
members the library does not promise to keep (private attributes, module
globals, a base class's internals). So each declares, as a :class:`Guard`,
the range of that library's versions it was tested against, and asks
:meth:`Guard.allows` before it changes anything. On another version, or when
a member it needs is gone, the guard warns once per process (a
``RuntimeWarning`` and a warning on the ``progrock.contrib`` logger, naming
the library, its version and the tested range) and the part stays off: the
application keeps running on the library's own code, without the part's
gain. There is deliberately no switch to force a part on: a version nobody
tested is exactly when a private member may have changed meaning.

A version counts only if it is a plain release (``26.10.0``); pre-releases,
development builds and local versions (``27.1.0rc1``, ``4.3.0+patched``)
are outside every range.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable

logger = logging.getLogger("progrock.contrib")

_RELEASE = re.compile(r"\d+(?:\.\d+)*")


def release(version: object) -> tuple[int, ...] | None:
    """``"26.10.0"`` -> ``(26, 10, 0)``; None for anything but a plain release string."""
    if not isinstance(version, str) or not _RELEASE.fullmatch(version):
        return None
    return tuple(int(part) for part in version.split("."))


def _padded(numbers: tuple[int, ...], width: int) -> tuple[int, ...]:
    return numbers + (0,) * (width - len(numbers))


def missing_members(owner: object, names: Iterable[str], where: str) -> list[str]:
    """The dotted names (``where.name``) of ``names`` that ``owner`` lacks."""
    return [f"{where}.{name}" for name in names if not hasattr(owner, name)]


class Guard:
    """The library versions one contrib part was tested against, and its warn-once state."""

    def __init__(
        self, part: str, library: str, *, first: str, before: str, off: str | None = None
    ) -> None:
        low, high = release(first), release(before)
        if low is None:
            raise ValueError(f"first must be a release like '26.10.0', got {first!r}")
        if high is None:
            raise ValueError(f"before must be a release like '27', got {before!r}")
        width = max(len(low), len(high))
        if _padded(low, width) >= _padded(high, width):
            raise ValueError(f"first must be below before, got {first!r} and {before!r}")
        self.part = part
        self.library = library
        self.first = first
        self.before = before
        self._low, self._high = low, high
        #: What staying off means, for the warning.
        self.off = off or f"the application runs on {library}'s own code, unpatched"
        self.warned = False

    @property
    def span(self) -> str:
        """The tested range, as a requirement specifier: ``>=26.10.0, <27``."""
        return f">={self.first}, <{self.before}"

    def covers(self, version: object) -> bool:
        """Whether ``version`` (a library's ``__version__``) is a release in the tested range."""
        numbers = release(version)
        if numbers is None:
            return False
        width = max(len(numbers), len(self._low), len(self._high))
        value = _padded(numbers, width)
        return _padded(self._low, width) <= value < _padded(self._high, width)

    def allows(self, version: object, missing: Iterable[str] = ()) -> bool:
        """True if the part may patch: ``version`` is tested and nothing it needs is ``missing``.

        Otherwise warns (the first time only) and returns False; the caller
        must then leave the library untouched.
        """
        gone = list(missing)
        shown = f"{self.library} {version!r}"
        if not self.covers(version):
            why = f"it was tested with {self.library} {self.span}, and this process has {shown}"
        elif gone:
            why = f"{shown} has no {', '.join(gone)}, which it needs (tested range {self.span})"
        else:
            return True
        self._refuse(why)
        return False

    def _refuse(self, why: str) -> None:
        if self.warned:
            return
        self.warned = True
        message = (
            f"{self.part} stays off: {why}. Nothing breaks: {self.off}, without this "
            f"part's gain; a tested {self.library} (or a ProgRock tested with this one) "
            "brings it back."
        )
        logger.warning("%s", message)
        # stacklevel 4: the code that called the part's install() (or built the layer).
        warnings.warn(message, RuntimeWarning, stacklevel=4)
