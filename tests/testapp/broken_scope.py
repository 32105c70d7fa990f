"""A module that fails on import, as a misconfigured scope module would."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

raise ImproperlyConfigured("this module cannot be imported")
