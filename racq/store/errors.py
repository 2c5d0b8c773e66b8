"""The store's one exception type, in a module of its own so every store module (db, migrations, ...)
can import it at the top without importing each other (db imports migrations; nothing imports db here).
"""


class StoreError(RuntimeError):
    """A store operation failed; nothing of it was written. The message says what and why."""


__all__ = ["StoreError"]
