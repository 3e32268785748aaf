"""Revision scripts, oldest first (``0001_calls`` creates the ``calls`` table)."""
