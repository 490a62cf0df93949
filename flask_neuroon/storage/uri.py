"""Storage URIs fit to show: passwords hidden, for logs, reprs and the CLI (pure).

One rule for every backend: the password of the userinfo (``user:pw@host``) and the
value of any query option that carries a secret (``?password=``, ``?sslpassword=``,
``?passwd=``, ``?token=``, ...) become ``***``.
"""

from __future__ import annotations

from urllib.parse import unquote, unquote_plus

#: Query options whose value is a secret, compared in lower case.
SECRET_OPTIONS = frozenset(
    {"password", "passwd", "pwd", "pass", "sslpassword", "secret", "token", "auth", "apikey"}
)


def redact_uri(uri: str) -> tuple[str, list[str]]:
    """``uri`` with its secrets replaced by ``***``, and those secrets (as written and
    decoded), so that a message quoting one can be scrubbed too."""
    base, mark, query = uri.partition("?")
    scheme, sep, rest = base.partition("://")
    secrets: list[str] = []
    if sep:
        authority, slash, path = rest.partition("/")
        userinfo, at, host = authority.rpartition("@")
        if at:
            user, colon, password = userinfo.partition(":")
            if colon and password:
                secrets += [password, unquote(password)]
                userinfo = f"{user}:***"
            authority = f"{userinfo}@{host}"
        base = f"{scheme}://{authority}{slash}{path}"
    if mark:
        pairs = []
        for pair in query.split("&"):
            name, equals, value = pair.partition("=")
            if unquote_plus(name).lower() in SECRET_OPTIONS and value:
                secrets += [value, unquote_plus(value)]
                value = "***"
            pairs.append(f"{name}{equals}{value}")
        base = f"{base}?{'&'.join(pairs)}"
    return base, secrets


def display_uri(uri: str) -> str:
    """``uri`` as it may be shown."""
    return redact_uri(uri)[0]


__all__ = ["SECRET_OPTIONS", "display_uri", "redact_uri"]
