"""Errors shared by every storage backend, so callers handle one type whatever the backend."""


class StorageError(RuntimeError):
    """A store failed or cannot be reached; the message names the store and how it was configured."""


class StoreBusy(StorageError):
    """Another process holds a store that admits one process at a time; waiting longer may help.
    ``what`` names the store, ``holder`` who holds it, ``retry_after_s`` a sensible wait."""

    def __init__(self, message: str, *, what: str, holder: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.what, self.holder, self.retry_after_s = what, holder, retry_after_s
