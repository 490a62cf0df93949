"""NEUROON_* configuration: what a shop may write, and the clear error for what it may not."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_neuroon import ConfigurationError, Neuroon
from flask_neuroon.config import Settings

GOOD = {
    "NEUROON_SHOP_ID": "shop_1",
    "NEUROON_API_KEY": "sk_live_abc",
    "NEUROON_ORIGIN": "https://shop.example",
}


def settings(**overrides: Any) -> Settings:
    return Settings.from_config({**GOOD, **overrides})


def test_defaults_are_the_documented_ones():
    s = settings()
    assert s.api_url == "https://api.neuroon.ai"
    assert s.endpoint == "https://api.neuroon.ai/api/plugin/shops/shop_1/track/conversion"
    assert (s.enabled, s.outbox, s.send_unattributed, s.active) == (True, True, True, True)
    assert s.cookie_name == "neuroon_clicks"
    assert s.storage_uri == "sqlite:///neuroon.sqlite3"
    assert s.snapshot_ttl == 259200
    assert (s.max_workers, s.max_pending, s.max_attempts) == (4, 1000, 5)
    assert s.timeout == (3.05, 10.0)
    assert s.retry_schedule == (300, 600, 1200, 2400)
    assert (s.flush_interval, s.dispatch, s.shutdown_timeout) == (60, "thread", 2.0)


def test_values_from_prefixed_env_strings_are_understood(monkeypatch: pytest.MonkeyPatch):
    app = Flask("envshop")
    for key, value in {
        "NEUROON_SHOP_ID": "shop_env",
        "NEUROON_API_KEY": "sk_env",
        "NEUROON_ORIGIN": "https://shop.example",
        "NEUROON_ENABLED": "false",
        "NEUROON_TIMEOUT": "2,5",
        "NEUROON_RETRY_SCHEDULE": "[10, 20]",
        "NEUROON_MAX_WORKERS": "8",
        "NEUROON_OUTBOX": "0",
    }.items():
        monkeypatch.setenv(f"FLASK_{key}", value)
    app.config.from_prefixed_env()
    s = Settings.from_config(app.config)
    assert s.shop_id == "shop_env"
    assert s.enabled is False
    assert s.timeout == (2.0, 5.0)
    assert s.retry_schedule == (10.0, 20.0)
    assert s.max_workers == 8
    assert s.outbox is False


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("NEUROON_API_URL", "http://api.neuroon.ai", "must use https"),
        ("NEUROON_API_URL", "ftp://api.neuroon.ai", "scheme://host[:port]"),
        ("NEUROON_API_URL", "https://api.neuroon.ai:99999", "port outside 1-65535"),
        ("NEUROON_API_URL", "https://api.neuroon.ai:", "empty port"),
        ("NEUROON_API_URL", "https://api neuroon.ai", "blanks"),
        ("NEUROON_API_URL", "https://api.neuroon.ai/\r\nX: y", "line breaks"),
        ("NEUROON_API_URL", "https://api_neuroon.ai", "host name that is not valid"),
        ("NEUROON_API_URL", 'https://api.neuroon.ai/a"b', "path that is not valid"),
        ("NEUROON_API_URL", "https://api.neuroon.ai/?", "query or fragment"),
        ("NEUROON_API_URL", "https://user:pw@api.neuroon.ai", "credentials"),
        ("NEUROON_API_URL", "", "must be a URL"),
        ("NEUROON_ORIGIN", "shop.example", "scheme://host[:port]"),
        ("NEUROON_ORIGIN", "https://shop.example/checkout", "scheme://host[:port]"),
        ("NEUROON_ORIGIN", "https://shop.example:99999", "port outside 1-65535"),
        ("NEUROON_ORIGIN", "https://shop example", "blanks"),
        ("NEUROON_ORIGIN", "https://sh<op>.example", "host name that is not valid"),
        ("NEUROON_ORIGIN", "https://shop.example;x", "host name that is not valid"),
        ("NEUROON_ORIGIN", "https://:pw@shop.example", "without user or password"),
        ("NEUROON_ORIGIN", "https://shop.example?", "without a path, query"),
        ("NEUROON_ORIGIN", "https://-shop.example", "host name that is not valid"),
        ("NEUROON_TIMEOUT", -1, "must be > 0"),
        ("NEUROON_TIMEOUT", (1, 2, 3), "(connect, read) pair"),
        ("NEUROON_TIMEOUT", "soon", "must be a number"),
        ("NEUROON_RETRY_SCHEDULE", (10, -5), "must be >= 0"),
        ("NEUROON_RETRY_SCHEDULE", (), "at least one delay"),
        ("NEUROON_MAX_WORKERS", 0, "must be >= 1"),
        ("NEUROON_MAX_WORKERS", 1e6, "must be <= 64"),
        ("NEUROON_MAX_WORKERS", 10**400, "must be <= 64"),
        ("NEUROON_MAX_PENDING", 10**7, "must be <= 1e+06"),
        ("NEUROON_SNAPSHOT_TTL", 2.6e11, "must be <= 7.776e+06"),
        ("NEUROON_FLUSH_INTERVAL", 1e300, "must be <= 86400"),
        ("NEUROON_FLUSH_INTERVAL", 0.0001, "0 (off) or >= 0.1 second"),
        ("NEUROON_TIMEOUT", (3, 1e9), "must be <= 300"),
        ("NEUROON_RETRY_SCHEDULE", (60, 1e12), "must be <= 2.592e+06"),
        ("NEUROON_MAX_ATTEMPTS", 10**6, "must be <= 100"),
        ("NEUROON_SHUTDOWN_TIMEOUT", 1e9, "must be <= 300"),
        ("NEUROON_CLAIM_LEASE", 1e9, "must be <= 86400"),
        ("NEUROON_MAX_PENDING", 2.5, "whole number"),
        ("NEUROON_MAX_ATTEMPTS", "many", "must be a number"),
        ("NEUROON_SNAPSHOT_TTL", 0, "must be >= 1"),
        ("NEUROON_SNAPSHOT_TTL", 0.9, "must be >= 1"),  # a mirror cookie of Max-Age=0
        ("NEUROON_FLUSH_INTERVAL", float("nan"), "finite"),
        ("NEUROON_SHUTDOWN_TIMEOUT", -0.1, "must be >= 0"),
        ("NEUROON_ENABLED", "maybe", "true or false"),
        ("NEUROON_DISPATCH", "carrier-pigeon", "must be one of"),
        ("NEUROON_COOKIE_NAME", "bad name;", "not a cookie name"),
        ("NEUROON_STORAGE_URI", "neuroon.db", "must be a URI"),
        ("NEUROON_SHOP_ID", "shop/../x", "letters, digits, _ . - only, not 'shop/../x'"),
        ("NEUROON_SHOP_ID", "shop_…", "not 'shop_…'"),  # the README's placeholder, as is
        ("NEUROON_MIRROR_COOKIE_NAME", "neuroon_clicks", "must differ from NEUROON_COOKIE_NAME"),
    ],
)
def test_malformed_values_raise_a_configuration_error_naming_the_key(key, value, words):
    with pytest.raises(ConfigurationError) as caught:
        settings(**{key: value})
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("secrets", "key", "words"),
    [
        ({"SECRET_KEY": 12345}, "SECRET_KEY", "must be text, not a int"),
        ({"SECRET_KEY": "k", "SECRET_KEY_FALLBACKS": "oldkey"}, "SECRET_KEY_FALLBACKS", "a list"),
        ({"SECRET_KEY": "k", "SECRET_KEY_FALLBACKS": [""]}, "SECRET_KEY_FALLBACKS", "non-empty"),
        ({"SECRET_KEY": "k", "SECRET_KEY_FALLBACKS": [7]}, "SECRET_KEY_FALLBACKS", "non-empty"),
    ],
)
def test_the_keys_that_sign_the_mirror_cookie_are_checked(secrets, key, words):
    # A string of fallbacks was read as one signing key per character: a mirror signed
    # with the key "o" was accepted. A number as SECRET_KEY (FLASK_SECRET_KEY=12345) broke
    # every tracked order that carried a mirror.
    with pytest.raises(ConfigurationError) as caught:
        settings(NEUROON_SNAPSHOTS="both", **secrets)
    assert caught.value.key == key and words in str(caught.value)
    assert settings(NEUROON_SNAPSHOTS="storage", **secrets).snapshots == "storage"


@pytest.mark.parametrize("blank", ["", "   ", None])
def test_a_blank_origin_is_missing_like_a_blank_shop_id_or_key(blank):
    s = settings(NEUROON_ORIGIN=blank)
    assert s.active is False and s.disabled_reason == "NEUROON_ORIGIN not set: tracking is disabled"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "http://localhost:5000/", "http://[::1]:9000", "http://127.9.9.9"],
)
def test_plain_http_is_allowed_to_loopback_only(url):
    assert settings(NEUROON_API_URL=url).api_url == url.rstrip("/")


def test_init_app_raises_configuration_error_and_registers_nothing():
    app = Flask("bad")
    app.config.update(GOOD, NEUROON_API_URL="http://evil.example")
    with pytest.raises(ConfigurationError, match="NEUROON_API_URL"):
        Neuroon(app)
    assert "neuroon" not in app.extensions


def test_the_api_key_is_hidden_in_reprs_and_errors():
    s = settings(NEUROON_API_KEY="sk_live_supersecret")
    assert "supersecret" not in repr(s)
    assert "supersecret" not in str(s.api_key)
    assert s.api_key is not None and s.api_key.reveal() == "sk_live_supersecret"
    with pytest.raises(ConfigurationError) as caught:
        settings(NEUROON_API_KEY="sk_live_supersecret", NEUROON_TIMEOUT="x")
    assert "supersecret" not in str(caught.value)


@pytest.mark.parametrize(
    "slot",
    ["NEUROON_ORIGIN", "NEUROON_API_URL", "NEUROON_TIMEOUT", "NEUROON_DISPATCH", "NEUROON_ENABLED"],
)
def test_a_key_pasted_into_another_setting_is_not_echoed(slot):
    # Two environment variables swapped: the error names the setting, never shows the key.
    key = "sk_S3CRETS3CRETS3CRETS3CRETS3CRET00"
    with pytest.raises(ConfigurationError) as caught:
        settings(**{"NEUROON_API_KEY": key, slot: key})
    assert caught.value.key == slot
    assert "S3CRET" not in str(caught.value) and "S3CRET" not in repr(caught.value)


@pytest.mark.parametrize("slot", ["NEUROON_MAX_WORKERS", "NEUROON_COOKIE_NAME"])
def test_part_of_a_key_cut_short_in_an_error_is_not_echoed_either(slot):
    # An error shows a long value cut at 60 characters: with it, a part of the key.
    key = "sk_0123456789abcdefghijklmnopqrstuv"
    with pytest.raises(ConfigurationError) as caught:
        settings(**{"NEUROON_API_KEY": key, slot: f"{'x' * 30} {key} {key}"})
    message = str(caught.value)
    assert caught.value.key == slot
    assert not [key[i : i + 8] for i in range(len(key) - 7) if key[i : i + 8] in message]


@pytest.mark.parametrize(
    ("missing", "reason"),
    [
        ({"NEUROON_SHOP_ID": None}, "NEUROON_SHOP_ID not set: tracking is disabled"),
        ({"NEUROON_API_KEY": ""}, "NEUROON_API_KEY not set: tracking is disabled"),
        ({"NEUROON_ORIGIN": None}, "NEUROON_ORIGIN not set: tracking is disabled"),
    ],
)
def test_a_missing_key_disables_tracking_instead_of_raising(missing, reason):
    s = settings(**missing)
    assert s.active is False
    assert s.disabled_reason == reason


@pytest.mark.parametrize(
    "key", ["sk_live_SUPERSECRET\nabc", "sk_live_SUPER SECRET", "sk_live_SÜPERSECRET", "sk\x00x"]
)
def test_an_api_key_that_cannot_be_a_header_fails_at_start_without_showing_it(key):
    with pytest.raises(ConfigurationError) as caught:
        settings(NEUROON_API_KEY=key)
    assert caught.value.key == "NEUROON_API_KEY"
    assert "SECRET" not in str(caught.value) and "SUPER" not in str(caught.value)


@pytest.mark.parametrize(
    ("origin", "sent"),
    [
        ("https://магазин.example", "https://xn--80aairftm.example"),
        ("https://españa.example", "https://xn--espaa-rta.example"),
        ("https://Shop.Example:443", "https://shop.example"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("https://shop.example:8443", "https://shop.example:8443"),
    ],
)
def test_origins_are_sent_in_their_ascii_canonical_form(origin, sent):
    assert settings(NEUROON_ORIGIN=origin).origin == sent


@pytest.mark.parametrize("uri", ["sqlite:///:memory:", "sqlite:///file::memory:?cache=shared"])
def test_sqlite_in_memory_is_refused_with_the_way_out(uri, tmp_path):
    # One in-memory database per connection: the sender threads would never see the rows.
    app = Flask("mem", instance_path=str(tmp_path))
    app.config.update(GOOD, NEUROON_STORAGE_URI=uri)
    with pytest.raises(ConfigurationError, match="use memory://") as caught:
        Neuroon(app)
    assert caught.value.key == "NEUROON_STORAGE_URI"
    assert "neuroon" not in app.extensions
    assert list(tmp_path.iterdir()) == []  # no file named ":memory:" left behind
