"""The error raised for invalid user data."""

from __future__ import annotations


class DataError(ValueError):
    """Invalid user data; the message says what is wrong and how to fix it."""
