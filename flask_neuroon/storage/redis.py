"""``redis://``, ``rediss://``, ``unix://`` — one Redis shared by every host (extra ``[redis]``).

Every operation that reads and then writes is one Lua script, so it is atomic across
threads, processes and hosts: a claim hands a row to one claimer only, a snapshot is
taken by one reader only, ``add`` refuses an id that exists.

Key layout (``P`` is ``{prefix}``, default ``{neuroon}``: one hash tag, so every key of
one storage lives in one Redis Cluster slot and scripts may touch them all; keys of
another prefix have another tag and never meet these)::

    P:snapshot:<order_id>    hash   clicks (JSON), expires_at         + a Redis TTL
    P:snapshots              zset   order ids by expires_at           (purge_snapshots)
    P:outbox:row:<order_id>  hash   payload, state, attempts, created_at, next_attempt_at,
                                    last_error, synced_at, lease_until, claim_token
                                    (a None field is absent)
    P:outbox:due             zset   pending rows without a live lease, by next_attempt_at
    P:outbox:leased          zset   pending rows claimed, by lease_until
    P:outbox:lapsed          zset   rows of ``due`` that still carry an expired lease
                                    (its claimer may still record a result), by lease_until
    P:outbox:pending         zset   pending rows by created_at        (stats, rows)
    P:outbox:sent            zset   sent rows by created_at           (rows)
    P:outbox:dead            zset   dead rows by created_at           (rows)
    P:outbox:synced          zset   sent rows by synced_at            (purge_sent)

The hash of a row is the truth; the sorted sets are indexes kept in step by the scripts.
Times are written as ``repr(float)`` strings and never computed in Lua, so a time reads
back as exactly the float that was given; sorted-set scores and ``tonumber`` parse the
same strings into the same doubles, so comparisons are exact too.

A claim (and ``due_ids``, ``stats``) first moves the rows whose lease ran out from
``leased`` back to ``due`` (each row once, however many calls follow); the hash keeps its
``claim_token``, so the slow claimer can still record its result until somebody claims
the row again, exactly as in the SQL backends. ``lapsed`` remembers those rows so that a
caller whose clock is behind (another host) still sees their lease as live.

The row keys are named inside the scripts (only the indexes are passed as ``KEYS``);
they share the indexes' hash tag, hence their slot, which is what Redis Cluster needs.

Durability is Redis's: run it with ``appendonly yes`` (``appendfsync everysec`` or
``always``), or a restart loses the outbox. Snapshots carry a Redis TTL as well as their
stored expiry, so they do not outlive their use even if nobody purges them.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import redis
from redis.backoff import ConstantBackoff
from redis.commands.core import Script
from redis.retry import Retry

from ..errors import ConfigurationError, StorageError
from .base import DEAD, PENDING, SENT, STATES, OutboxRow, OutboxStats, Storage
from .serialization import dumps_clicks, loads_clicks
from .uri import redact_uri

#: Defaults of :meth:`RedisStorage.from_uri`; ``?socket_connect_timeout=`` and
#: ``?socket_timeout=`` in the URI win. A dead or hung Redis fails in about this long
#: instead of holding a checkout.
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 2.0

#: A snapshot stays in Redis this long after its ``expires_at`` (measured on the clock of
#: the host that stored it): the stored ``expires_at`` decides, the TTL only frees memory
#: of snapshots nobody takes or purges. The margin covers clock differences between hosts.
SNAPSHOT_GRACE_SECONDS = 600.0

#: Rows or snapshots per script call for the bulk operations (purges, make_due), so one
#: call never blocks Redis for long. Each batch is atomic.
BATCH = 500

_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())

_ROW_FIELDS = (
    "payload",
    "state",
    "attempts",
    "created_at",
    "next_attempt_at",
    "last_error",
    "synced_at",
    "lease_until",
    "claim_token",
)

# --- Lua -----------------------------------------------------------------------------
# Every outbox script gets the same KEYS (the indexes) and ARGV[1] = the row key prefix.
_OUTBOX_KEYS = ("due", "leased", "lapsed", "pending", "sent", "dead", "synced")

_PRELUDE = """
local DUE, LEASED, LAPSED = KEYS[1], KEYS[2], KEYS[3]
local BY_STATE = {pending = KEYS[4], sent = KEYS[5], dead = KEYS[6]}
local SYNCED = KEYS[7]
local ROW = ARGV[1]

local function fetch(id)
    local v = redis.call('HMGET', ROW .. id, 'payload', 'state', 'attempts', 'created_at',
        'next_attempt_at', 'last_error', 'synced_at', 'lease_until', 'claim_token')
    if not v[2] then return false end
    table.insert(v, 1, id)
    return v
end

-- Leases that ran out by `now`: the rows become due again (their token stays).
local function lapse(now)
    local ids = redis.call('ZRANGEBYSCORE', LEASED, '-inf', now)
    for _, id in ipairs(ids) do
        redis.call('ZREM', LEASED, id)
        local h = redis.call('HMGET', ROW .. id, 'next_attempt_at', 'lease_until')
        if h[1] then
            redis.call('ZADD', DUE, h[1], id)
            redis.call('ZADD', LAPSED, h[2], id)
        end
    end
end

-- Rows of DUE that are not claimable at `now` (a lease lapsed by a later clock): at most
-- this many of the first candidates must be skipped.
local function not_yet(now)
    return redis.call('ZCOUNT', LAPSED, '(' .. now, '+inf')
end

local function claimable(id, now)
    local h = redis.call('HMGET', ROW .. id, 'state', 'next_attempt_at', 'lease_until')
    return h[1] == 'pending' and tonumber(h[2]) <= now
        and ((not h[3]) or tonumber(h[3]) <= now)
end
"""

_ADD = """
local id, payload, now = ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', ROW .. id) == 1 then return 0 end
redis.call('HSET', ROW .. id, 'payload', payload, 'state', 'pending', 'attempts', 0,
    'created_at', now, 'next_attempt_at', now)
redis.call('ZADD', BY_STATE.pending, now, id)
redis.call('ZADD', DUE, now, id)
return 1
"""

_CLAIM = """
local now_s, lease, token, limit = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local one, only = ARGV[6] == '1', ARGV[7]
local now = tonumber(now_s)
local out = {}
if limit < 1 then return out end

local function take(id)
    redis.call('HINCRBY', ROW .. id, 'attempts', 1)
    redis.call('HSET', ROW .. id, 'lease_until', lease, 'claim_token', token)
    redis.call('ZREM', DUE, id)
    redis.call('ZREM', LAPSED, id)
    redis.call('ZADD', LEASED, lease, id)
    out[#out + 1] = fetch(id)
end

if one then
    if claimable(only, now) then take(only) end
    return out
end
lapse(now_s)
local ids = redis.call('ZRANGEBYSCORE', DUE, '-inf', now_s, 'LIMIT', 0, limit + not_yet(now_s))
for _, id in ipairs(ids) do
    if #out >= limit then break end
    if claimable(id, now) then take(id) end
end
return out
"""

_DUE_IDS = """
local now_s, limit = ARGV[2], tonumber(ARGV[3])
local now = tonumber(now_s)
local out = {}
if limit < 1 then return out end
lapse(now_s)
local ids = redis.call('ZRANGEBYSCORE', DUE, '-inf', now_s, 'LIMIT', 0, limit + not_yet(now_s))
for _, id in ipairs(ids) do
    if #out >= limit then break end
    if claimable(id, now) then out[#out + 1] = id end
end
return out
"""

_FINISH = """
local id, token, mode, a, b = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local key = ROW .. id
local h = redis.call('HMGET', key, 'state', 'claim_token', 'created_at')
if h[1] ~= 'pending' or h[2] ~= token then return 0 end
redis.call('HDEL', key, 'lease_until', 'claim_token')
redis.call('ZREM', DUE, id)
redis.call('ZREM', LEASED, id)
redis.call('ZREM', LAPSED, id)
if mode == 'sent' then
    redis.call('HSET', key, 'state', 'sent', 'synced_at', a)
    redis.call('HDEL', key, 'last_error')
    redis.call('ZREM', BY_STATE.pending, id)
    redis.call('ZADD', BY_STATE.sent, h[3], id)
    redis.call('ZADD', SYNCED, a, id)
elseif mode == 'retry' then
    redis.call('HSET', key, 'next_attempt_at', a, 'last_error', b)
    redis.call('ZADD', DUE, a, id)
else
    redis.call('HSET', key, 'state', 'dead', 'last_error', b)
    redis.call('ZREM', BY_STATE.pending, id)
    redis.call('ZADD', BY_STATE.dead, h[3], id)
end
return 1
"""

_ROWS = """
local state, limit = ARGV[2], tonumber(ARGV[3])
local out = {}
for _, id in ipairs(redis.call('ZRANGE', BY_STATE[state], 0, limit - 1)) do
    local row = fetch(id)
    if row then out[#out + 1] = row end
end
return out
"""

_STATS = """
local now_s = ARGV[2]
local now = tonumber(now_s)
lapse(now_s)
local due = redis.call('ZCOUNT', DUE, '-inf', now_s)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', LAPSED, '(' .. now_s, '+inf')) do
    local at = redis.call('HGET', ROW .. id, 'next_attempt_at')
    if at and tonumber(at) <= now then due = due - 1 end
end
local oldest = false
local first = redis.call('ZRANGE', BY_STATE.pending, 0, 0)
if first[1] then oldest = redis.call('HGET', ROW .. first[1], 'created_at') end
return {redis.call('ZCARD', BY_STATE.pending), due, redis.call('ZCARD', BY_STATE.sent),
    redis.call('ZCARD', BY_STATE.dead), oldest}
"""

_MAKE_DUE = """
local now_s, batch, leased_too = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = tonumber(now_s)
local ids = redis.call('ZRANGEBYSCORE', DUE, '(' .. now_s, '+inf', 'LIMIT', 0, batch)
for _, id in ipairs(ids) do
    redis.call('HSET', ROW .. id, 'next_attempt_at', now_s)
    redis.call('ZADD', DUE, now_s, id)
end
local more = 0
if leased_too == '1' then
    for _, id in ipairs(redis.call('ZRANGE', LEASED, 0, -1)) do
        local at = redis.call('HGET', ROW .. id, 'next_attempt_at')
        if at and tonumber(at) > now then
            redis.call('HSET', ROW .. id, 'next_attempt_at', now_s)
            more = more + 1
        end
    end
end
return {#ids, more}
"""

_REQUEUE = """
local id, now = ARGV[2], ARGV[3]
local key = ROW .. id
local h = redis.call('HMGET', key, 'state', 'created_at')
if h[1] ~= 'dead' then return 0 end
redis.call('HSET', key, 'state', 'pending', 'attempts', 0, 'next_attempt_at', now)
redis.call('HDEL', key, 'lease_until', 'claim_token')
redis.call('ZREM', BY_STATE.dead, id)
redis.call('ZADD', BY_STATE.pending, h[2], id)
redis.call('ZADD', DUE, now, id)
return 1
"""

_DELETE = """
local id, state = ARGV[2], ARGV[3]
if redis.call('HGET', ROW .. id, 'state') ~= state then return 0 end
redis.call('DEL', ROW .. id)
for i = 1, #KEYS do redis.call('ZREM', KEYS[i], id) end
return 1
"""

_PURGE_SENT = """
local before, batch = ARGV[2], tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', SYNCED, '-inf', '(' .. before, 'LIMIT', 0, batch)
for _, id in ipairs(ids) do
    redis.call('DEL', ROW .. id)
    redis.call('ZREM', SYNCED, id)
    redis.call('ZREM', BY_STATE.sent, id)
end
return #ids
"""

# Snapshots: KEYS[1] = the expiry index, ARGV[1] = the snapshot key prefix.
_PUT_SNAPSHOT = """
local key = ARGV[1] .. ARGV[2]
redis.call('HSET', key, 'clicks', ARGV[3], 'expires_at', ARGV[4])
redis.call('PEXPIRE', key, ARGV[5])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
return 1
"""

_TAKE_SNAPSHOT = """
local key = ARGV[1] .. ARGV[2]
local found = redis.call('HMGET', key, 'clicks', 'expires_at')
redis.call('DEL', key)
redis.call('ZREM', KEYS[1], ARGV[2])
return found
"""

_DELETE_SNAPSHOT = """
redis.call('DEL', ARGV[1] .. ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[2])
return 1
"""

_PURGE_SNAPSHOTS = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
    redis.call('DEL', ARGV[1] .. id)
    redis.call('ZREM', KEYS[1], id)
end
return #ids
"""


def _text(value: Any) -> str | None:
    """A reply value as text (the client may or may not decode responses)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _time(value: float) -> str:
    """A time as the string that parses back to exactly this float (in Python, Lua, Redis)."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"a time must be finite, not {value!r}")
    return repr(number)


def _optional_float(value: Any) -> float | None:
    text = _text(value)
    return None if text is None else float(text)


def _row(values: Sequence[Any]) -> OutboxRow:
    order_id, payload, state, attempts, created, due, error, synced, lease, token = (
        _text(value) for value in values
    )
    return OutboxRow(
        order_id=order_id or "",
        payload=payload or "",
        state=state or PENDING,
        attempts=int(attempts or 0),
        created_at=float(created or 0.0),
        next_attempt_at=float(due or 0.0),
        last_error=error,
        synced_at=_optional_float(synced),
        lease_until=_optional_float(lease),
        claim_token=token,
    )


def _check_prefix(prefix: str) -> str:
    if not prefix or "{" in prefix or "}" in prefix:
        raise ValueError(f"a Redis key prefix is a non-empty name without braces, not {prefix!r}")
    return prefix


class RedisStorage(Storage):
    """Snapshots and the outbox in Redis; see the module docstring for the key layout."""

    remote = True

    def __init__(self, client: redis.Redis, *, prefix: str = "neuroon") -> None:
        self.prefix = _check_prefix(prefix)
        self._client = client
        kwargs = client.connection_pool.connection_kwargs
        #: Strings that never appear in a message of ours (the password, as given).
        self._secrets: set[str] = {str(kwargs["password"])} if kwargs.get("password") else set()
        self.display_uri = self._describe(client)
        tag = "{" + prefix + "}"
        self._snapshot_prefix = f"{tag}:snapshot:"
        self._snapshot_index = f"{tag}:snapshots"
        self._row_prefix = f"{tag}:outbox:row:"
        self._outbox_keys = [f"{tag}:outbox:{name}" for name in _OUTBOX_KEYS]
        # register_script only hashes the text: nothing is sent before the first call.
        scripts = {
            "add": _ADD,
            "claim": _CLAIM,
            "due_ids": _DUE_IDS,
            "finish": _FINISH,
            "rows": _ROWS,
            "stats": _STATS,
            "make_due": _MAKE_DUE,
            "requeue": _REQUEUE,
            "delete": _DELETE,
            "purge_sent": _PURGE_SENT,
        }
        self._scripts: dict[str, Script] = {
            name: client.register_script(_PRELUDE + source) for name, source in scripts.items()
        }
        self._put_snapshot = client.register_script(_PUT_SNAPSHOT)
        self._take_snapshot = client.register_script(_TAKE_SNAPSHOT)
        self._delete_snapshot = client.register_script(_DELETE_SNAPSHOT)
        self._purge_snapshots = client.register_script(_PURGE_SNAPSHOTS)

    @classmethod
    def from_uri(cls, uri: str) -> RedisStorage:
        """``redis://[[user]:password@]host:port/db``, ``rediss://…``, ``unix:///path?db=N``.

        ``?prefix=name`` chooses the key prefix (default ``neuroon``); every other query
        value goes to redis-py (``socket_timeout=5``, ``max_connections=20``, ...). Nothing
        connects until the first operation.
        """
        display, secrets = redact_uri(uri)
        base, _, query = uri.partition("?")
        prefix = "neuroon"
        passed: list[tuple[str, str]] = []
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name == "prefix":
                prefix = value
            else:
                passed.append((name, value))
        url = f"{base}?{urlencode(passed, quote_via=quote)}" if passed else base
        try:
            # redis-py reads a path that is not a number as database 0: refuse it instead.
            scheme, _, rest = base.partition("://")
            database = rest.partition("/")[2]
            if scheme.lower() != "unix" and database and not database.isdigit():
                raise ValueError(
                    f"the database is a number (redis://host:6379/0), not {database!r}"
                )
            client = redis.Redis.from_url(
                url,
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=READ_TIMEOUT,
                # One quick retry when a connection breaks (a Redis restart, an idle
                # connection closed by a proxy), none on a timeout: a slow Redis fails in
                # READ_TIMEOUT. Should the break come after Redis ran a script, the re-run
                # finds the work done: add and mark_* answer False, the snapshot reads as
                # gone, the first run's claimed rows wait for their lease to end. No row is
                # ever held by two claimers.
                retry=Retry(ConstantBackoff(0.05), 1, supported_errors=(redis.ConnectionError,)),
            )
            # An unknown query option would only fail at the first operation, as a
            # TypeError: build one (unconnected) connection now to find it here.
            pool = client.connection_pool
            pool.connection_class(**pool.connection_kwargs)
            storage = cls(client, prefix=prefix)
        except (ValueError, TypeError) as exc:
            message = str(exc)
            for secret in sorted(secrets, key=len, reverse=True):
                message = message.replace(secret, "***")
            raise ConfigurationError(
                "NEUROON_STORAGE_URI", f"cannot use Redis URI {display}: {message}"
            ) from None
        storage.display_uri = display
        storage._secrets.update(secrets)
        return storage

    def _describe(self, client: redis.Redis) -> str:
        """A URI for a client we were given: where it connects, never its password."""
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        auth = ":***@" if kwargs.get("password") else ""
        db = kwargs.get("db", 0)
        query = "" if self.prefix == "neuroon" else f"prefix={quote(self.prefix)}"
        if kwargs.get("path"):
            return f"unix://{auth}{kwargs['path']}?db={db}" + (f"&{query}" if query else "")
        ssl = issubclass(pool.connection_class, redis.SSLConnection)
        host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
        uri = f"{'rediss' if ssl else 'redis'}://{auth}{host}:{port}/{db}"
        return uri + (f"?{query}" if query else "")

    # --- plumbing --------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.RedisError, OSError) as exc:
            message = str(exc) or type(exc).__name__
            for secret in sorted(self._secrets, key=len, reverse=True):
                message = message.replace(secret, "***")
            raise StorageError(
                f"Redis ({self.display_uri}): {type(exc).__name__}: {message}"
            ) from exc

    def _outbox(self, name: str, *args: str | int) -> Any:
        with self._errors():
            return self._scripts[name](keys=self._outbox_keys, args=(self._row_prefix, *args))

    def _after_fork(self) -> None:
        """In a forked child: drop the parent's connections and locks.

        redis-py notices the new pid on first use and forgets the parent's sockets, but
        it keeps the pool's locks; a lock that a parent thread held at the fork would
        stay held in the child forever. The child has a single thread here, so fresh
        locks are safe.
        """
        pool = self._client.connection_pool
        if getattr(pool, "pid", os.getpid()) == os.getpid():
            return
        for name in ("_lock", "_fork_lock"):
            lock = getattr(pool, name, None)
            if isinstance(lock, _RLOCK):
                setattr(pool, name, threading.RLock())
            elif isinstance(lock, _LOCK):
                setattr(pool, name, threading.Lock())
        pool.reset()

    def close(self) -> None:
        """Disconnect this process's connections (a later call connects again)."""
        with contextlib.suppress(redis.RedisError, OSError):
            self._client.connection_pool.disconnect()

    # --- snapshots -------------------------------------------------------------------

    def put_snapshot(self, order_id: str, clicks: Mapping[str, str], expires_at: float) -> None:
        # The TTL is relative to this host's clock, so a skewed Redis clock cannot cut a
        # snapshot short; the stored expires_at decides on reading.
        remaining = max(float(expires_at) - time.time(), 0.0) + SNAPSHOT_GRACE_SECONDS
        with self._errors():
            self._put_snapshot(
                keys=[self._snapshot_index],
                args=(
                    self._snapshot_prefix,
                    order_id,
                    dumps_clicks(clicks),
                    _time(expires_at),
                    math.ceil(remaining * 1000),
                ),
            )

    def take_snapshot(self, order_id: str, now: float) -> dict[str, str] | None:
        with self._errors():
            clicks, expires_at = self._take_snapshot(
                keys=[self._snapshot_index], args=(self._snapshot_prefix, order_id)
            )
        expires = _optional_float(expires_at)
        if clicks is None or expires is None or expires <= now:
            return None
        return loads_clicks(clicks)

    def peek_snapshot(self, order_id: str, now: float) -> dict[str, str] | None:
        with self._errors():
            clicks, expires_at = self._client.hmget(
                self._snapshot_prefix + order_id, ["clicks", "expires_at"]
            )
        expires = _optional_float(expires_at)
        if clicks is None or expires is None or expires <= now:
            return None
        return loads_clicks(clicks)

    def delete_snapshot(self, order_id: str) -> None:
        with self._errors():
            self._delete_snapshot(
                keys=[self._snapshot_index], args=(self._snapshot_prefix, order_id)
            )

    def purge_snapshots(self, now: float) -> int:
        total = 0
        while True:
            with self._errors():
                count = int(
                    self._purge_snapshots(
                        keys=[self._snapshot_index],
                        args=(self._snapshot_prefix, _time(now), BATCH),
                    )
                )
            total += count
            if count < BATCH:
                return total

    # --- outbox ----------------------------------------------------------------------

    def add(self, order_id: str, payload: str, now: float) -> bool:
        return int(self._outbox("add", order_id, payload, _time(now))) == 1

    def claim(
        self, now: float, lease_until: float, token: str, limit: int, order_id: str | None = None
    ) -> list[OutboxRow]:
        if limit < 1:
            return []
        one = "0" if order_id is None else "1"
        found = self._outbox(
            "claim", _time(now), _time(lease_until), token, int(limit), one, order_id or ""
        )
        return [_row(values) for values in found]

    def mark_sent(self, order_id: str, token: str, now: float) -> bool:
        return int(self._outbox("finish", order_id, token, SENT, _time(now), "")) == 1

    def mark_retry(self, order_id: str, token: str, next_attempt_at: float, error: str) -> bool:
        done = self._outbox("finish", order_id, token, "retry", _time(next_attempt_at), error)
        return int(done) == 1

    def mark_dead(self, order_id: str, token: str, error: str) -> bool:
        return int(self._outbox("finish", order_id, token, DEAD, "", error)) == 1

    def get(self, order_id: str) -> OutboxRow | None:
        with self._errors():
            values = self._client.hmget(self._row_prefix + order_id, list(_ROW_FIELDS))
        if values[1] is None:
            return None
        return _row([order_id, *values])

    def rows(self, state: str, limit: int) -> list[OutboxRow]:
        if state not in STATES or limit < 1:
            return []
        return [_row(values) for values in self._outbox("rows", state, int(limit))]

    def due_ids(self, now: float, limit: int) -> list[str]:
        if limit < 1:
            return []
        return [_text(value) or "" for value in self._outbox("due_ids", _time(now), int(limit))]

    def make_due(self, now: float) -> int:
        total, leased_too = 0, "1"
        while True:
            count, leased = self._outbox("make_due", _time(now), BATCH, leased_too)
            total += int(count) + int(leased)
            leased_too = "0"
            if int(count) < BATCH:
                return total

    def stats(self, now: float) -> OutboxStats:
        pending, due, sent, dead, oldest = self._outbox("stats", _time(now))
        created = _optional_float(oldest)
        return OutboxStats(
            pending=int(pending),
            due=int(due),
            sent=int(sent),
            dead=int(dead),
            oldest_pending_age=None if created is None else now - created,
        )

    def requeue(self, order_id: str, now: float) -> bool:
        return int(self._outbox("requeue", order_id, _time(now))) == 1

    def delete(self, order_id: str, state: str) -> bool:
        if state not in STATES:
            return False
        return int(self._outbox("delete", order_id, state)) == 1

    def purge_sent(self, before: float) -> int:
        total = 0
        while True:
            count = int(self._outbox("purge_sent", _time(before), BATCH))
            total += count
            if count < BATCH:
                return total


__all__ = ["RedisStorage"]
