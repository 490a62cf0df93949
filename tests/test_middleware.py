"""The WSGI middleware: a lazy click map in every request's environ, no Flask needed."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Response

from flask_neuroon import cookies, middleware
from flask_neuroon.cookies import COOKIE_NAME
from flask_neuroon.middleware import (
    ENVIRON_KEY,
    ClickMap,
    ClickMapMiddleware,
    clicks_from_environ,
)


def widget_value(clicks: dict[str, str]) -> str:
    text = json.dumps(clicks, separators=(",", ":"), ensure_ascii=False)
    return quote(text, safe="-_.!~*'()")


CLICKS = {"SKU-1": "log-1", "café": "log-2"}
COOKIE_HEADER = f"_ga=GA1.2.3; {COOKIE_NAME}={widget_value(CLICKS)}; session=abc"


class ParseSpy:
    """Counts calls to the parser the middleware uses, and passes them through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str | None, str]] = []
        self._real = cookies._shared_click_map
        monkeypatch.setattr(middleware, "_shared_click_map", self)

    def __call__(self, header: str | None, name: str = COOKIE_NAME) -> Mapping[str, str]:
        self.calls.append((header, name))
        return self._real(header, name)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> ParseSpy:
    return ParseSpy(monkeypatch)


def raw_client(app: Any) -> Client:
    """A test client that sends the Cookie header given per request, as is.

    (With its cookie jar on, werkzeug's client replaces that header with the jar's.)
    """
    return Client(app, use_cookies=False)


def plain_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """A bare WSGI application that reports the clicks it sees."""
    clicks = environ[ENVIRON_KEY]
    body = json.dumps(dict(clicks), sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def ignore_start_response(status, headers, exc_info=None):
    return lambda data: None


def silent_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """A bare WSGI application that never looks at the clicks."""
    start_response("204 No Content", [])
    return []


# -- the map -----------------------------------------------------------------------------


def test_click_map_is_not_parsed_until_read(spy):
    clicks = ClickMap(COOKIE_HEADER)
    assert not clicks.parsed
    assert spy.calls == []
    assert clicks["SKU-1"] == "log-1"
    assert clicks.parsed
    assert spy.calls == [(COOKIE_HEADER, COOKIE_NAME)]


@pytest.mark.parametrize(
    "first_read",
    [
        len,
        list,
        bool,
        repr,
        lambda clicks: clicks["café"],
        lambda clicks: "café" in clicks,
        lambda clicks: clicks.get("nope"),
        lambda clicks: list(clicks.keys()),
        lambda clicks: list(clicks.items()),
        lambda clicks: list(clicks.values()),
        lambda clicks: clicks == CLICKS,
    ],
    ids=[
        "len",
        "iter",
        "bool",
        "repr",
        "getitem",
        "contains",
        "get",
        "keys",
        "items",
        "values",
        "eq",
    ],
)
def test_click_map_parses_once_whatever_is_read_first(spy, first_read):
    clicks = ClickMap(COOKIE_HEADER)
    first_read(clicks)
    assert len(clicks) == 2
    assert dict(clicks) == CLICKS
    assert clicks == CLICKS
    assert "SKU-1" in clicks and "nope" not in clicks
    assert clicks.get("café") == "log-2"
    assert clicks.get("nope", "default") == "default"
    assert bool(clicks)
    repr(clicks)
    assert len(spy.calls) == 1


def test_click_map_behaves_like_a_read_only_mapping():
    clicks = ClickMap(COOKIE_HEADER)
    assert isinstance(clicks, Mapping)
    assert sorted(clicks) == ["SKU-1", "café"]
    assert sorted(clicks.items()) == sorted(CLICKS.items())
    assert sorted(clicks.values()) == ["log-1", "log-2"]
    assert clicks == ClickMap(COOKIE_HEADER)
    assert clicks != {"SKU-1": "log-1"}
    assert clicks != "not a mapping"
    not_a_str: object = 42
    assert not_a_str not in clicks
    with pytest.raises(KeyError):
        clicks["nope"]
    with pytest.raises(TypeError):
        hash(clicks)
    with pytest.raises(TypeError):
        clicks["x"] = "y"  # type: ignore[index]


def test_click_map_without_a_cookie_is_empty_and_falsy():
    for header in (None, "", "session=abc"):
        clicks = ClickMap(header)
        assert not clicks
        assert len(clicks) == 0
        assert clicks == {}
        assert repr(clicks) == "ClickMap({})"


def test_click_map_is_one_small_object():
    clicks = ClickMap(COOKIE_HEADER)
    assert not hasattr(clicks, "__dict__")
    assert clicks.cookie_name == COOKIE_NAME


def test_click_map_drops_the_header_once_parsed():
    clicks = ClickMap(COOKIE_HEADER)
    assert clicks._header is COOKIE_HEADER
    len(clicks)
    assert clicks._header is None


def test_click_map_repr_stays_short_with_a_huge_cookie():
    huge = {f"product-{i:04d}-" + "x" * 100: "log-" + "y" * 100 for i in range(60)}
    header = f"{COOKIE_NAME}={widget_value(huge)}"
    clicks = ClickMap(header)
    assert len(clicks) == 60
    text = repr(clicks)
    assert len(text) < 400
    assert text.startswith("ClickMap({'product-0000-xxx")
    assert text.endswith(", ... (57 more)})")


def test_click_map_repr_shows_small_maps_in_full():
    assert repr(ClickMap(COOKIE_HEADER)) == "ClickMap({'SKU-1': 'log-1', 'café': 'log-2'})"


def test_click_map_reads_a_custom_cookie_name():
    header = f"{COOKIE_NAME}={widget_value({'a': '1'})}; mine={widget_value({'b': '2'})}"
    assert ClickMap(header, "mine") == {"b": "2"}


# -- the middleware ----------------------------------------------------------------------


def test_plain_wsgi_app_sees_the_clicks_without_flask():
    client = raw_client(ClickMapMiddleware(plain_app))
    response = client.get("/", headers={"Cookie": COOKIE_HEADER})
    assert response.status_code == 200
    assert response.get_json() == CLICKS


def test_request_without_cookie_sees_an_empty_map():
    client = raw_client(ClickMapMiddleware(plain_app))
    assert client.get("/").get_json() == {}


def test_clicks_are_never_parsed_when_nobody_reads_them(spy):
    seen: list[object] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.append(environ[ENVIRON_KEY])
        return silent_app(environ, start_response)

    client = raw_client(ClickMapMiddleware(app))
    for _ in range(3):
        assert client.get("/", headers={"Cookie": COOKIE_HEADER}).status_code == 204
    assert spy.calls == []
    assert len(seen) == 3
    assert all(isinstance(clicks, ClickMap) and not clicks.parsed for clicks in seen)


def test_clicks_are_parsed_at_most_once_per_request(spy):
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        clicks = environ[ENVIRON_KEY]
        for _ in range(5):
            assert clicks_from_environ(environ) is clicks
            assert clicks["SKU-1"] == "log-1"
            assert len(clicks) == 2
        return plain_app(environ, start_response)

    client = raw_client(ClickMapMiddleware(app))
    assert client.get("/", headers={"Cookie": COOKIE_HEADER}).get_json() == CLICKS
    assert client.get("/", headers={"Cookie": COOKIE_HEADER}).get_json() == CLICKS
    assert len(spy.calls) == 2  # one per request


def test_each_request_gets_its_own_map():
    client = raw_client(ClickMapMiddleware(plain_app))
    first = client.get("/", headers={"Cookie": f"{COOKIE_NAME}={widget_value({'a': '1'})}"})
    second = client.get("/", headers={"Cookie": f"{COOKIE_NAME}={widget_value({'b': '2'})}"})
    assert first.get_json() == {"a": "1"}
    assert second.get_json() == {"b": "2"}


def test_two_click_cookies_reach_the_app_merged_first_one_winning():
    specific = widget_value({"shoe": "log-new", "hat": "log-hat"})
    general = widget_value({"shoe": "log-old", "bag": "log-bag"})
    header = f"{COOKIE_NAME}={specific}; _ga=1; {COOKIE_NAME}={general}"
    client = raw_client(ClickMapMiddleware(plain_app))
    assert client.get("/", headers={"Cookie": header}).get_json() == {
        "shoe": "log-new",
        "hat": "log-hat",
        "bag": "log-bag",
    }


def test_two_click_cookies_set_on_different_paths_are_merged():
    client = Client(ClickMapMiddleware(plain_app))
    client.set_cookie(COOKIE_NAME, widget_value({"shoe": "log-old", "bag": "b"}), path="/")
    client.set_cookie(COOKIE_NAME, widget_value({"shoe": "log-new"}), path="/shop")
    response = client.get("/shop/checkout")
    sent = response.request.headers["Cookie"]
    assert sent.count(f"{COOKIE_NAME}=") == 2
    first = "log-new" if sent.index("log-new") < sent.index("log-old") else "log-old"
    assert response.get_json() == {"shoe": first, "bag": "b"}


def test_a_mangled_cookie_never_breaks_the_request():
    client = raw_client(ClickMapMiddleware(plain_app))
    for header in (
        f"{COOKIE_NAME}=%7B%22a%22%3A%221%22%2C%22b",  # cut by the widget
        f"{COOKIE_NAME}=%7Bgarbage",
        f"{COOKIE_NAME}=" + "[" * 5000,
        f"{COOKIE_NAME}=" + "%25" * 6000,
        f'{COOKIE_NAME}="unterminated\\',
    ):
        response = client.get("/", headers={"Cookie": header})
        assert response.status_code == 200
    cut = f"{COOKIE_NAME}=%7B%22a%22%3A%221%22%2C%22b"
    assert client.get("/", headers={"Cookie": cut}).get_json() == {"a": "1"}


def test_the_apps_response_passes_through_untouched():
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"hello "
            yield b"world"

        def close(self) -> None:
            closed.append(True)

    body = Body()
    returned: list[object] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("201 Created", [("X-Shop", "yes"), ("Set-Cookie", "a=b; Path=/")])
        return body

    wrapped = ClickMapMiddleware(app)

    def spy_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        result = wrapped(environ, start_response)
        returned.append(result)
        return result

    response = raw_client(spy_app).get("/", headers={"Cookie": COOKIE_HEADER})
    assert returned == [body]  # the very iterable the app returned
    assert response.status_code == 201
    assert response.headers["X-Shop"] == "yes"
    assert response.headers["Set-Cookie"] == "a=b; Path=/"
    assert response.get_data() == b"hello world"
    response.close()
    assert closed == [True]


def test_the_middleware_wraps_a_werkzeug_response_app():
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        clicks = environ[ENVIRON_KEY]
        return Response(f"{len(clicks)} clicks")(environ, start_response)

    client = raw_client(ClickMapMiddleware(app))
    assert client.get("/", headers={"Cookie": COOKIE_HEADER}).get_data() == b"2 clicks"


def test_the_middleware_honours_a_custom_cookie_name_and_environ_key():
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        assert ENVIRON_KEY not in environ
        start_response("200 OK", [])
        return [json.dumps(dict(environ["shop.clicks"])).encode()]

    client = raw_client(ClickMapMiddleware(app, cookie_name="my_clicks", environ_key="shop.clicks"))
    header = f"{COOKIE_NAME}={widget_value({'a': '1'})}; my_clicks={widget_value({'b': '2'})}"
    assert json.loads(client.get("/", headers={"Cookie": header}).get_data()) == {"b": "2"}


# -- clicks_from_environ -----------------------------------------------------------------


def test_clicks_from_environ_returns_the_middlewares_map(spy):
    environ: dict[str, Any] = {"HTTP_COOKIE": COOKIE_HEADER}
    ClickMapMiddleware(silent_app)(environ, ignore_start_response)
    stored = environ[ENVIRON_KEY]
    assert isinstance(stored, ClickMap)
    assert clicks_from_environ(environ) is stored
    assert clicks_from_environ(environ) == CLICKS
    assert len(spy.calls) == 1


def test_clicks_from_environ_without_the_middleware_parses_the_header_once(spy):
    environ: dict[str, Any] = {"HTTP_COOKIE": COOKIE_HEADER}
    clicks = clicks_from_environ(environ)
    assert environ[ENVIRON_KEY] is clicks
    assert spy.calls == []
    assert clicks == CLICKS
    assert clicks_from_environ(environ) is clicks
    assert clicks_from_environ(environ)["café"] == "log-2"
    assert len(spy.calls) == 1


def test_clicks_from_environ_without_a_cookie_is_empty():
    environ: dict[str, Any] = {}
    assert clicks_from_environ(environ) == {}
    assert isinstance(environ[ENVIRON_KEY], ClickMap)


def test_clicks_from_environ_replaces_something_that_is_not_a_click_map():
    environ: dict[str, Any] = {"HTTP_COOKIE": COOKIE_HEADER, ENVIRON_KEY: {"forged": "x"}}
    assert clicks_from_environ(environ) == CLICKS
    assert isinstance(environ[ENVIRON_KEY], ClickMap)


def test_clicks_from_environ_reads_the_cookie_name_it_is_asked_for():
    header = f"{COOKIE_NAME}={widget_value({'a': '1'})}; mine={widget_value({'b': '2'})}"
    environ: dict[str, Any] = {"HTTP_COOKIE": header, ENVIRON_KEY: ClickMap(header)}
    assert clicks_from_environ(environ, cookie_name="mine") == {"b": "2"}
    assert clicks_from_environ(environ, environ_key="other") == {"a": "1"}


# -- layering ----------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["cookies.py", "middleware.py", "ids.py"])
def test_module_does_not_import_flask(module):
    source = (Path(middleware.__file__).parent / module).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    assert not {name for name in imported if name.split(".")[0] == "flask"}
    assert not {name for name in imported if name.startswith("flask_neuroon")}
    allowed_internal = {"middleware.py": {".cookies"}, "cookies.py": {".ids"}}.get(module, set())
    assert {name for name in imported if name.startswith(".")} <= allowed_internal
