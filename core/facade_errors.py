"""The facade's error edge: storage and decoding failures become domain errors, in one place.

:func:`domain_errors` wraps every public method of a class, so no facade method repeats a
try/except. What it translates are expected failures of the world outside (a store down, the
embedded shard held by another process, an image that cannot be decoded); anything else passes
through unchanged, so a bug keeps its own type and traceback.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa

from core.errors import Busy, InvalidRequest, Unavailable
from core.images import ImageRejected
from core.storage.errors import StorageError, StoreBusy

T = TypeVar("T")


def public_reason(exc: BaseException) -> str:
    """What a store failure may tell a user: the error's kind and the first line of the driver's own
    message. SQLAlchemy's text of a failed statement holds the SQL and every parameter (other files'
    names, the uploader, hashes); none of that ever reaches a report, an HTTP answer or a log line."""
    if isinstance(exc, sa.exc.StatementError):
        orig = exc.orig
        first = str(orig).strip().splitlines()[0] if orig is not None and str(orig).strip() else "no detail"
        return f"catalog error ({type(orig).__name__ if orig is not None else type(exc).__name__}): {first}"
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return f"catalog error ({type(exc).__name__})"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@contextmanager
def translated() -> Iterator[None]:
    try:
        yield
    except StoreBusy as exc:
        raise Busy(exc.what, exc.holder, exc.retry_after_s) from exc
    except StorageError as exc:
        raise Unavailable("storage", str(exc)) from exc
    except sa.exc.OperationalError as exc:  # the catalog server went away mid-call
        raise Unavailable("catalog", public_reason(exc)) from exc
    except ImageRejected as exc:
        raise InvalidRequest("image", str(exc)) from exc


def _wrapped(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        with translated():
            return func(*args, **kwargs)

    return call


def domain_errors(cls: type[T]) -> type[T]:
    """Class decorator: every public method and classmethod of ``cls`` raises domain errors."""
    for name, member in list(vars(cls).items()):
        if name.startswith("_"):
            continue
        if isinstance(member, classmethod):
            setattr(cls, name, classmethod(_wrapped(member.__func__)))
        elif inspect.isfunction(member):
            setattr(cls, name, _wrapped(member))
    return cls
