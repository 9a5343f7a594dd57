"""Errors shared by every storage backend, so callers handle one type whatever the backend."""


class StorageError(RuntimeError):
    """A store failed or cannot be reached; the message names the store and how it was configured."""


class StoreBusy(StorageError):
    """Another process holds a store that admits one process at a time; waiting longer may help."""
