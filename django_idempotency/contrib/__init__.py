"""Integrations with other packages, each importing its package only inside its own module."""
