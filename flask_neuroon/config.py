"""``NEUROON_*`` configuration: defaults, parsing and validation (pure, no Flask import).

:meth:`Settings.from_config` reads a mapping (``app.config``), accepts the forms that
``app.config.from_prefixed_env()`` produces (JSON values, or plain strings such as
``"3.05,10"`` or ``"false"``) and raises :class:`~flask_neuroon.errors.ConfigurationError`
naming the key for anything malformed. Every key is documented in the README.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .ids import shown

DEFAULTS: dict[str, Any] = {
    "NEUROON_API_URL": "https://api.neuroon.ai",
    "NEUROON_SHOP_ID": None,
    "NEUROON_API_KEY": None,
    "NEUROON_ORIGIN": None,
    "NEUROON_ENABLED": True,
    "NEUROON_COOKIE_NAME": "neuroon_clicks",
    "NEUROON_STORAGE_URI": "sqlite:///neuroon.sqlite3",
    "NEUROON_SNAPSHOT_TTL": 259200,
    "NEUROON_OUTBOX": True,
    "NEUROON_MAX_WORKERS": 4,
    "NEUROON_MAX_PENDING": 1000,
    "NEUROON_TIMEOUT": (3.05, 10),
    "NEUROON_RETRY_SCHEDULE": (300, 600, 1200, 2400),
    "NEUROON_MAX_ATTEMPTS": 5,
    "NEUROON_FLUSH_INTERVAL": 60,
    "NEUROON_DISPATCH": "thread",
    "NEUROON_SHUTDOWN_TIMEOUT": 2.0,
    "NEUROON_SEND_UNATTRIBUTED": True,
    "NEUROON_CREATE_TABLES": True,
    "NEUROON_CLAIM_LEASE": None,
    "NEUROON_SNAPSHOTS": None,
    "NEUROON_MIRROR_COOKIE_NAME": "neuroon_clicks_mirror",
}

SNAPSHOT_MODES = ("storage", "cookie", "both")

DISPATCH_MODES = ("thread", "sync", "celery")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# One DNS label of an ASCII (punycode) host name.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# What may follow the host in NEUROON_API_URL: a path of unreserved and sub-delim characters.
_URL_PATH = re.compile(r"^(/[A-Za-z0-9\-._~!$&'()*+,;=:@%]*)*$")
_DAY = 86400.0
#: Upper bounds: beyond them a value is a slip of the keyboard (and some would overflow a
#: timestamp or a cookie's expiry date, or start a million threads).
LIMITS: dict[str, float] = {
    "NEUROON_SNAPSHOT_TTL": 90 * _DAY,
    "NEUROON_MAX_WORKERS": 64,
    "NEUROON_MAX_PENDING": 1_000_000,
    "NEUROON_TIMEOUT": 300.0,
    "NEUROON_RETRY_SCHEDULE": 30 * _DAY,
    "NEUROON_MAX_ATTEMPTS": 100,
    "NEUROON_FLUSH_INTERVAL": _DAY,
    "NEUROON_SHUTDOWN_TIMEOUT": 300.0,
    "NEUROON_CLAIM_LEASE": _DAY,
}
#: The shortest sweep interval (0 turns the sweeper off): a sweep is a database query.
MIN_FLUSH_INTERVAL = 0.1


class Secret:
    """A string that never shows itself in a repr, a str(), a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def is_loopback_host(host: str | None) -> bool:
    """127.0.0.0/8, ::1 and localhost: the only hosts the API may be reached over plain http."""
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigurationError(key, f"must be true or false, not {value!r}")


def _number(key: str, value: Any, *, minimum: float = 0, allow_equal: bool = True) -> float:
    """A finite number from ``minimum`` up to the key's limit in :data:`LIMITS`."""
    if isinstance(value, bool):
        raise ConfigurationError(key, f"must be a number, not {value!r}")
    limit = LIMITS.get(key)
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        number = float("inf") if value > 0 else float("-inf")
        if limit is None or number < 0:
            raise ConfigurationError(key, "must be a finite number") from None
    except (TypeError, ValueError):
        raise ConfigurationError(key, f"must be a number, not {shown(value)}") from None
    if number != number or (number in (float("inf"), float("-inf")) and limit is None):
        raise ConfigurationError(key, "must be a finite number")
    if number < minimum or (number == minimum and not allow_equal):
        relation = ">=" if allow_equal else ">"
        raise ConfigurationError(key, f"must be {relation} {minimum:g}, not {shown(value)}")
    if limit is not None and number > limit:
        raise ConfigurationError(key, f"must be <= {limit:g}, not {shown(value)}")
    return number


#: The shortest piece of a secret that is hidden where it appears (a message may show a
#: value cut short, an API may echo part of a key, and with it part of the key).
_SECRET_PIECE = 8


def scrub_secret(text: str, secret: str) -> str:
    """``text`` with every run of it made of pieces of ``secret`` (_SECRET_PIECE characters
    or more) as ``***``. One pass over ``text``: each window of _SECRET_PIECE characters is
    looked up among the secret's; overlapping hits make one hidden run."""
    if len(secret) < 4:
        return text
    if len(secret) < _SECRET_PIECE:
        return text.replace(secret, "***")
    pieces = {secret[i : i + _SECRET_PIECE] for i in range(len(secret) - _SECRET_PIECE + 1)}
    runs: list[tuple[int, int]] = []
    for start in range(len(text) - _SECRET_PIECE + 1):
        if text[start : start + _SECRET_PIECE] in pieces:
            end = start + _SECRET_PIECE
            if runs and start <= runs[-1][1]:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((start, end))
    if not runs:
        return text
    shown, last = [], 0
    for start, end in runs:
        shown.append(text[last:start])
        shown.append("***")
        last = end
    shown.append(text[last:])
    return "".join(shown)


def _integer(key: str, value: Any, *, minimum: int) -> int:
    number = _number(key, value, minimum=minimum)
    if number != int(number):
        raise ConfigurationError(key, f"must be a whole number, not {value!r}")
    return int(number)


def _numbers(key: str, value: Any) -> list[Any]:
    if isinstance(value, str):
        return [part.strip() for part in value.strip("()[] ").split(",") if part.strip()]
    if isinstance(value, Sequence):
        return list(value)
    return [value]


def _timeout(value: Any) -> tuple[float, float]:
    key = "NEUROON_TIMEOUT"
    parts = _numbers(key, value)
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ConfigurationError(key, "must be one number or a (connect, read) pair of seconds")
    connect, read = (_number(key, part, minimum=0, allow_equal=False) for part in parts)
    return connect, read


def _schedule(value: Any) -> tuple[float, ...]:
    key = "NEUROON_RETRY_SCHEDULE"
    delays = tuple(_number(key, part, minimum=0) for part in _numbers(key, value))
    if not delays:
        raise ConfigurationError(key, "needs at least one delay in seconds")
    return delays


def _snapshots(value: Any, config: Mapping[str, Any]) -> str:
    key = "NEUROON_SNAPSHOTS"
    if value is None or value == "":
        # Opt-in: the mirror rides on every request for the snapshot TTL, which a shop
        # with shared storage pays for nothing.
        return "storage"
    mode = str(value).strip().lower()
    if mode not in SNAPSHOT_MODES:
        raise ConfigurationError(key, f"must be one of {', '.join(SNAPSHOT_MODES)}, not {value!r}")
    if mode != "storage":
        if not config.get("SECRET_KEY"):
            raise ConfigurationError(key, f"{mode!r} signs a cookie: it needs the app's SECRET_KEY")
        _signing_keys(config)
    return mode


def _signing_keys(config: Mapping[str, Any]) -> None:
    """SECRET_KEY and SECRET_KEY_FALLBACKS as the mirror cookie signs with them: text or
    bytes, and the fallbacks a list (a string would be read as one key per character)."""
    secret = config.get("SECRET_KEY")
    if not isinstance(secret, (str, bytes)):
        raise ConfigurationError(
            "SECRET_KEY",
            f"signs the mirror cookie (NEUROON_SNAPSHOTS): it must be text, not a"
            f" {type(secret).__name__} (FLASK_SECRET_KEY=12345 is read as a number: quote it)",
        )
    fallbacks = config.get("SECRET_KEY_FALLBACKS")
    if fallbacks is None:
        return
    if isinstance(fallbacks, (str, bytes)) or not isinstance(fallbacks, (list, tuple)):
        raise ConfigurationError(
            "SECRET_KEY_FALLBACKS",
            f"must be a list of old keys, not a {type(fallbacks).__name__}"
            " (FLASK_SECRET_KEY_FALLBACKS='[\"old key\"]')",
        )
    if not all(isinstance(old, (str, bytes)) and old for old in fallbacks):
        raise ConfigurationError("SECRET_KEY_FALLBACKS", "each old key must be non-empty text")


def _claim_lease(timeout: tuple[float, float], value: Any) -> float | None:
    if value is None:
        return None
    key = "NEUROON_CLAIM_LEASE"
    lease = _number(key, value, minimum=0, allow_equal=False)
    if lease <= sum(timeout):
        raise ConfigurationError(
            key,
            f"must be longer than a send can take (NEUROON_TIMEOUT adds up to {sum(timeout):g})",
        )
    return lease


def _port(key: str, parts: Any) -> int | None:
    """The URL's port, 1 to 65535, or None when it has none."""
    try:
        port: int | None = parts.port
    except ValueError:
        port = 0
    if port is not None and not 0 < port < 65536:
        raise ConfigurationError(key, "has a port outside 1-65535")
    if port is None and parts.netloc.endswith(":"):
        raise ConfigurationError(key, "has an empty port")
    return port


def _host(key: str, hostname: str) -> str:
    """A host name as it goes on the wire: IP literals as they are (IPv6 in brackets),
    names in lower-case ASCII, an IDN as punycode. Anything else is refused."""
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        pass
    else:
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    try:
        ascii_host = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        ascii_host = ""
    labels = ascii_host[:-1].split(".") if ascii_host.endswith(".") else ascii_host.split(".")
    if not ascii_host or len(ascii_host) > 253 or not all(_LABEL.match(lab) for lab in labels):
        raise ConfigurationError(key, f"has a host name that is not valid: {shown(hostname)}")
    return ascii_host


def _url_parts(key: str, value: Any, example: str) -> Any:
    """urlsplit of a URL with no blanks or control characters, scheme http(s), a host."""
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise ConfigurationError(key, f"must be a URL such as {example}")
    if any(char.isspace() or not char.isprintable() for char in text):
        raise ConfigurationError(key, "must not contain blanks, line breaks or control characters")
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(key, f"must be scheme://host[:port] such as {example}")
    return parts


def _api_url(value: Any) -> str:
    key = "NEUROON_API_URL"
    parts = _url_parts(key, value, "https://api.neuroon.ai")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(key, "must not carry credentials: use NEUROON_API_KEY")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ConfigurationError(key, "must not have a query or fragment")
    host = _host(key, parts.hostname)
    port = _port(key, parts)
    path = parts.path.rstrip("/")
    if not _URL_PATH.match(path):
        raise ConfigurationError(key, f"has a path that is not valid: {shown(path)}")
    if parts.scheme == "http" and not is_loopback_host(host.strip("[]")):
        raise ConfigurationError(
            key, f"must use https (http://{host} is plain http to a host that is not loopback)"
        )
    return f"{parts.scheme}://{host}{'' if port is None else f':{port}'}{path}"


def _origin(value: Any) -> str:
    key = "NEUROON_ORIGIN"
    form = "must be scheme://host[:port] such as https://shop.example"
    parts = _url_parts(key, value, "https://shop.example")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in value:
        raise ConfigurationError(key, f"{form}, without a path, query or fragment")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ConfigurationError(key, f"{form}, without user or password")
    host = _host(key, parts.hostname)
    port = _port(key, parts)
    default_port = {"https": 443, "http": 80}[parts.scheme]
    shown_port = "" if port in (None, default_port) else f":{port}"
    return f"{parts.scheme}://{host}{shown_port}"


def _flush_interval(value: Any) -> float:
    key = "NEUROON_FLUSH_INTERVAL"
    interval = _number(key, value)
    if 0 < interval < MIN_FLUSH_INTERVAL:
        raise ConfigurationError(
            key, f"must be 0 (off) or >= {MIN_FLUSH_INTERVAL:g} second, not {shown(value)}"
        )
    return interval


def _optional_text(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ConfigurationError(key, "must be a string")
    text = str(value).strip()
    return text or None


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one app. ``api_key`` is a :class:`Secret`."""

    api_url: str
    shop_id: str | None
    api_key: Secret | None = field(repr=False)
    origin: str | None
    enabled: bool
    cookie_name: str
    storage_uri: str = field(repr=False)  # may hold a password
    snapshot_ttl: float
    outbox: bool
    max_workers: int
    max_pending: int
    timeout: tuple[float, float]
    retry_schedule: tuple[float, ...]
    max_attempts: int
    flush_interval: float
    dispatch: str
    shutdown_timeout: float
    send_unattributed: bool
    create_tables: bool = True
    #: Where clicks are kept across the gateway: "storage", "cookie" (signed mirror) or both.
    snapshots: str = "storage"
    mirror_cookie_name: str = "neuroon_clicks_mirror"
    #: Seconds a claimed row stays ours; None: connect + read timeout + 30 s.
    claim_lease: float | None = None
    #: Why tracking is off although NEUROON_ENABLED is true (a missing key), else None.
    disabled_reason: str | None = None

    @property
    def active(self) -> bool:
        """True when conversions are stored and sent."""
        return self.enabled and self.disabled_reason is None

    @property
    def snapshots_in_storage(self) -> bool:
        return self.snapshots in ("storage", "both")

    @property
    def snapshots_in_cookie(self) -> bool:
        return self.snapshots in ("cookie", "both")

    @property
    def endpoint(self) -> str:
        return f"{self.api_url}/api/plugin/shops/{self.shop_id}/track/conversion"

    @property
    def lease_seconds(self) -> float:
        """How long a claimed row is ours: longer than any send can take."""
        if self.claim_lease is not None:
            return self.claim_lease
        return self.timeout[0] + self.timeout[1] + 30.0

    def with_changes(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Validate ``config``; raise :class:`ConfigurationError` naming the key. A message
        never shows the API key, even when it was pasted into another key."""
        try:
            return cls._from_config(config)
        except ConfigurationError as exc:
            key = config.get("NEUROON_API_KEY")
            message = str(exc).split(": ", 1)[-1]
            scrubbed = scrub_secret(message, key.strip()) if isinstance(key, str) else message
            if scrubbed != message:
                raise ConfigurationError(exc.key, scrubbed) from None
            raise

    @classmethod
    def _from_config(cls, config: Mapping[str, Any]) -> Settings:
        def get(key: str) -> Any:
            value = config.get(key)
            return DEFAULTS[key] if value is None else value

        shop_id = _optional_text("NEUROON_SHOP_ID", config.get("NEUROON_SHOP_ID"))
        if shop_id is not None and not re.fullmatch(r"[A-Za-z0-9_.\-]+", shop_id):
            raise ConfigurationError(
                "NEUROON_SHOP_ID",
                f"may hold letters, digits, _ . - only, not {shown(shop_id)} (the id your"
                " Neuroon panel shows, like shop_abc123)",
            )
        api_key = _optional_text("NEUROON_API_KEY", config.get("NEUROON_API_KEY"))
        if api_key is not None and not re.fullmatch(r"[\x21-\x7e]+", api_key):
            # Never echo the key: say what is wrong with it, not what it is.
            raise ConfigurationError(
                "NEUROON_API_KEY",
                "must be printable ASCII without spaces or line breaks: was something pasted"
                " with it?",
            )
        origin_raw = config.get("NEUROON_ORIGIN")
        blank = origin_raw is None or (isinstance(origin_raw, str) and not origin_raw.strip())
        origin = None if blank else _origin(origin_raw)  # blank: missing, like the others

        missing = [
            name
            for name, value in (
                ("NEUROON_SHOP_ID", shop_id),
                ("NEUROON_API_KEY", api_key),
                ("NEUROON_ORIGIN", origin),
            )
            if value is None
        ]
        reason = f"{', '.join(missing)} not set: tracking is disabled" if missing else None

        cookie_name = get("NEUROON_COOKIE_NAME")
        if not isinstance(cookie_name, str) or not _COOKIE_NAME.match(cookie_name):
            raise ConfigurationError(
                "NEUROON_COOKIE_NAME", f"is not a cookie name: {cookie_name!r}"
            )
        storage_uri = get("NEUROON_STORAGE_URI")
        if not isinstance(storage_uri, str) or "://" not in storage_uri:
            raise ConfigurationError(
                "NEUROON_STORAGE_URI",
                "must be a URI such as sqlite:///neuroon.sqlite3 or memory://",
            )
        dispatch = str(get("NEUROON_DISPATCH")).strip().lower()
        if dispatch not in DISPATCH_MODES:
            raise ConfigurationError(
                "NEUROON_DISPATCH", f"must be one of {', '.join(DISPATCH_MODES)}, not {dispatch!r}"
            )

        timeout = _timeout(get("NEUROON_TIMEOUT"))
        snapshots = _snapshots(config.get("NEUROON_SNAPSHOTS"), config)
        mirror_name = get("NEUROON_MIRROR_COOKIE_NAME")
        if not isinstance(mirror_name, str) or not _COOKIE_NAME.match(mirror_name):
            raise ConfigurationError(
                "NEUROON_MIRROR_COOKIE_NAME", f"is not a cookie name: {mirror_name!r}"
            )
        if mirror_name == cookie_name:
            raise ConfigurationError(
                "NEUROON_MIRROR_COOKIE_NAME",
                f"must differ from NEUROON_COOKIE_NAME ({cookie_name!r}): the signed, HttpOnly"
                " mirror would overwrite the widget's click cookie",
            )
        return cls(
            api_url=_api_url(get("NEUROON_API_URL")),
            shop_id=shop_id,
            api_key=Secret(api_key) if api_key else None,
            origin=origin,
            enabled=_bool("NEUROON_ENABLED", get("NEUROON_ENABLED")),
            cookie_name=cookie_name,
            storage_uri=storage_uri.strip(),
            snapshot_ttl=_number("NEUROON_SNAPSHOT_TTL", get("NEUROON_SNAPSHOT_TTL"), minimum=1),
            outbox=_bool("NEUROON_OUTBOX", get("NEUROON_OUTBOX")),
            max_workers=_integer("NEUROON_MAX_WORKERS", get("NEUROON_MAX_WORKERS"), minimum=1),
            max_pending=_integer("NEUROON_MAX_PENDING", get("NEUROON_MAX_PENDING"), minimum=1),
            timeout=timeout,
            retry_schedule=_schedule(get("NEUROON_RETRY_SCHEDULE")),
            max_attempts=_integer("NEUROON_MAX_ATTEMPTS", get("NEUROON_MAX_ATTEMPTS"), minimum=1),
            flush_interval=_flush_interval(get("NEUROON_FLUSH_INTERVAL")),
            dispatch=dispatch,
            shutdown_timeout=_number("NEUROON_SHUTDOWN_TIMEOUT", get("NEUROON_SHUTDOWN_TIMEOUT")),
            send_unattributed=_bool("NEUROON_SEND_UNATTRIBUTED", get("NEUROON_SEND_UNATTRIBUTED")),
            create_tables=_bool("NEUROON_CREATE_TABLES", get("NEUROON_CREATE_TABLES")),
            claim_lease=_claim_lease(timeout, config.get("NEUROON_CLAIM_LEASE")),
            snapshots=snapshots,
            mirror_cookie_name=mirror_name,
            disabled_reason=reason,
        )


__all__ = [
    "DEFAULTS",
    "DISPATCH_MODES",
    "LIMITS",
    "SNAPSHOT_MODES",
    "Secret",
    "Settings",
    "is_loopback_host",
]
