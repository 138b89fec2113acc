"""Errors a user can act on: each names the file, the field, the bad value and what is valid."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^:@/\s]+):([^@/\s]*)@")


def mask_uri(text: str) -> str:
    """Replace the password of every ``scheme://user:password@`` URI in ``text`` by ``****``."""
    return _CREDENTIALS.sub(r"\1\2:****@", text)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input.

    Parameters
    ----------
    where : str
        The field, as a YAML path (``systems[0].params.halide``) or a description.
    message : str
        What is wrong.
    value : Any
        The offending value (``None`` when the field is missing).
    valid : str
        What would be valid.
    line : int | None
        1-based line in the file, when known.

    """

    where: str
    message: str
    value: Any = None
    valid: str = ""
    line: int | None = None

    def format(self, file: str | None) -> str:
        """Return the one-line message ``file:line: field: message (got ...); valid: ...``.

        Without a file (a command-line option, say) the line starts at the field, which then
        names the option: ``--oxidation: expected KEY=VALUE (got 'Li+1'); valid: ...``.
        """
        text = f"{self.where}: {self.message}"
        if file:
            text = f"{file}:{self.line}: {text}" if self.line is not None else f"{file}: {text}"
        if self.value is not None:
            text += f" (got {self.value!r})"
        if self.valid:
            text += f"; valid: {self.valid}"
        return mask_uri(text)


@dataclass
class SuperionicError(Exception):
    """A user-facing error made of one or more :class:`Problem` lines.

    The CLI prints one line per problem and exits with status 2, before anything is written.
    """

    problems: list[Problem] = field(default_factory=list)
    file: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(p.format(self.file) for p in self.problems)

    @classmethod
    def single(
        cls, where: str, message: str, value: Any = None, valid: str = "", file: str | None = None
    ) -> SuperionicError:
        """Build an error holding one problem."""
        return cls([Problem(where, message, value, valid)], file)


class SpecError(SuperionicError):
    """The campaign file (or another input file) is invalid."""


class StructureError(SuperionicError):
    """A structure, prototype or ordering request cannot be honoured."""
