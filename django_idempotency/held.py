"""A transaction held open across a request's phases: opened before its view, closed after.

The entry points cannot wrap the view in a ``with`` block: the claim is decided in one
hook (``process_view``, DRF's ``initial()``) and the outcome in another
(``process_response``, ``finalize_response()``). ``Held`` enters the context manager in the
first and exits it in the second, as the ``with`` statement would have.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any


class RolledBack(Exception):
    """What a held block is exited with to roll it back: the view failed or was refused."""


class Held:
    """A context manager entered now, exited by ``close()``: committed, or rolled back."""

    def __init__(self, manager: AbstractContextManager[Any]) -> None:
        manager.__enter__()
        self._manager = manager

    def close(self, *, commit: bool) -> None:
        """Exit the block, once: normally when ``commit``, else as if ``RolledBack`` was raised.

        An exception from the exit itself (a commit that fails) is raised, as from ``with``.
        Its owners forget a ``Held`` as they close it, so none is closed twice.
        """
        if commit:
            self._manager.__exit__(None, None, None)
        else:
            self._manager.__exit__(RolledBack, RolledBack(), None)
