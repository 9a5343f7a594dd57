"""The key that signs login cookies and API tokens.

With any server backend several processes (app replicas, the API) share the collection and must
sign with the same key, so it comes from ``AUTH_SECRET`` and nothing starts without it. The
embedded default is one machine's folder: a random key is generated once and kept beside the data
(``DATA_DIR/auth-secret``, mode 0600), so sign-ins survive restarts with nothing to configure.
"""

from __future__ import annotations

import os
import secrets

from core.settings import Settings, SettingsError
from core.users import write_private_file

SECRET_FILE = "auth-secret"


def resolve_auth_secret(settings: Settings) -> str:
    settings.check()  # refuses the known placeholders
    if settings.auth_secret:
        return settings.auth_secret
    if settings.uses_servers:
        raise SettingsError(
            "AUTH_SECRET is not set. With a server backend every app and API process must sign sign-ins "
            "with the same key: set AUTH_SECRET to a random value, e.g. `openssl rand -hex 32`."
        )
    path = settings.data_dir / SECRET_FILE
    if not path.is_file():
        # Written aside and linked into place: a process starting at the same moment reads either
        # no file or the whole key, and the first link wins.
        draft = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        write_private_file(draft, secrets.token_urlsafe(48))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    secret = path.read_text().strip()
    if not secret:
        raise SettingsError(f"{path} is empty: delete it and a new key is generated (everybody signs in again).")
    return secret
