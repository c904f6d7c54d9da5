"""Environment variables set for a while and then put back as the caller had them."""

from __future__ import annotations

import os


def saved_environ(names) -> dict[str, str | None]:
    """This process's values of the variables `names` (None: unset), for `restore_environ`."""
    return {name: os.environ.get(name) for name in names}


def restore_environ(saved: dict[str, str | None]) -> None:
    """Put the variables of `saved_environ` back: each set to its value, or unset again."""
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
