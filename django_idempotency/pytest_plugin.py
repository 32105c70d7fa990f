"""The pytest plugin of ``django_idempotency.testing``: its helpers as fixtures (docs/testing.md).

Registered as the ``django_idempotency`` entry point, so installing the app is enough. Each
fixture imports Django only when a test asks for it, after pytest-django set it up.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest


@pytest.fixture
def idempotency() -> ModuleType:
    """The ``django_idempotency.testing`` helpers: ``assert_replays``, ``fire_duplicates``..."""
    from django_idempotency import testing

    return testing


@pytest.fixture
def idempotency_disabled(settings: Any) -> None:
    """Switch the layer off for one test (``IDEMPOTENCY_DISABLED``): views that should not care."""
    settings.IDEMPOTENCY_DISABLED = True
