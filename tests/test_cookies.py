"""The click-cookie parser: what a shop gets from every cookie a browser may send.

Each test names what the shop would see. Expected maps are exact.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http.cookies import SimpleCookie
from urllib.parse import quote, unquote_to_bytes

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from werkzeug.http import dump_cookie

from flask_neuroon import cookies
from flask_neuroon.cookies import (
    COOKIE_NAME,
    MAX_DECODE_ROUNDS,
    MAX_ENTRIES,
    MAX_ID_LENGTH,
    MAX_VALUE_LENGTH,
    parse_click_header,
    parse_click_value,
)
from flask_neuroon.middleware import ClickMap

# -- how the cookie gets written ---------------------------------------------------------


def encode_uri_component(text: str) -> str:
    """JavaScript's encodeURIComponent: UTF-8, everything but A-Za-z0-9 -_.!~*'() escaped."""
    return quote(text, safe="-_.!~*'()")


def stringify(clicks: dict[str, str]) -> str:
    """JavaScript's JSON.stringify: compact, non-ASCII left as is."""
    return json.dumps(clicks, separators=(",", ":"), ensure_ascii=False)


def widget_value(clicks: dict[str, str]) -> str:
    """The value the widget writes: encodeURIComponent(JSON.stringify(clicks))."""
    return encode_uri_component(stringify(clicks))


def as_wsgi(text: str) -> str:
    """How text sent as raw UTF-8 bytes reaches HTTP_COOKIE (PEP 3333: latin-1)."""
    return text.encode("utf-8").decode("latin-1")


def werkzeug_quoted(text: str) -> str:
    """The value part of the Set-Cookie werkzeug (Flask's set_cookie) writes for text."""
    return as_wsgi(dump_cookie(COOKIE_NAME, text).split(";")[0].split("=", 1)[1])


CLICKS = {
    "SKU-10293-BLK-M": "7f1c9d2e-51a4-4c3b-9e0f-2b8a6d4c1e90",
    "4815162342": "0b6e3a1f-8c2d-4e5f-a7b9-1c3d5e7f9a0b",
    "chaussure-été 42": "c2f0e4a6-3b1d-4f8e-9a2c-6d4b8e0f2a1c",
}


def header_with(value: str, name: str = COOKIE_NAME) -> str:
    return f"_ga=GA1.2.1408337154.1716890011; {name}={value}; session=eyJfZnJlc2giOmZhbHNlfQ.ZmOGTw.k3Hq"


# -- the normal cookie -------------------------------------------------------------------


def test_widget_cookie_gives_every_click():
    assert parse_click_value(widget_value(CLICKS)) == CLICKS


def test_widget_cookie_in_a_full_cookie_header_gives_every_click():
    assert parse_click_header(header_with(widget_value(CLICKS))) == CLICKS


def test_no_cookie_header_gives_no_clicks():
    assert parse_click_header(None) == {}
    assert parse_click_header("") == {}
    assert parse_click_header("_ga=GA1.2.3; session=abc") == {}


def test_empty_click_cookie_gives_no_clicks():
    assert parse_click_header("neuroon_clicks=") == {}
    assert parse_click_header("neuroon_clicks=%7B%7D") == {}
    assert parse_click_value("{}") == {}


def test_cookie_first_last_alone_and_without_spaces_is_found():
    value = widget_value({"a": "1"})
    assert parse_click_header(f"neuroon_clicks={value}") == {"a": "1"}
    assert parse_click_header(f"x=1;neuroon_clicks={value};y=2") == {"a": "1"}
    assert parse_click_header(f"x=1;  \tneuroon_clicks={value}") == {"a": "1"}
    assert parse_click_header(f"x=1; neuroon_clicks=  {value}  ; y=2") == {"a": "1"}


def test_other_cookies_with_a_similar_name_are_not_read():
    value = widget_value({"a": "1"})
    assert parse_click_header(f"xneuroon_clicks={value}") == {}
    assert parse_click_header(f"neuroon_clicks_v2={value}") == {}
    assert parse_click_header(f"Neuroon_Clicks={value}") == {}
    # The name inside another cookie's value is not a cookie.
    assert parse_click_header(f"ref=neuroon_clicks={value}") == {}


def test_a_custom_cookie_name_is_read():
    value = widget_value({"a": "1"})
    header = f"neuroon_clicks={widget_value({'b': '2'})}; my_clicks={value}"
    assert parse_click_header(header, "my_clicks") == {"a": "1"}


# -- encodings ---------------------------------------------------------------------------


def test_raw_json_cookie_gives_every_click():
    assert parse_click_value(as_wsgi(stringify(CLICKS))) == CLICKS
    assert parse_click_value('{"a": "1", "b": "2"}') == {"a": "1", "b": "2"}


def test_json_with_unicode_escapes_gives_the_real_characters():
    assert parse_click_value(json.dumps({"café": "x"})) == {"café": "x"}


def test_cookie_quoted_by_werkzeug_gives_every_click():
    value = werkzeug_quoted(stringify(CLICKS))
    assert value.startswith('"') and "\\054" in value and "\\303\\251" in value
    assert parse_click_value(value) == CLICKS
    assert parse_click_header(header_with(value)) == CLICKS


def test_cookie_quoted_by_python_http_cookies_gives_every_click():
    clicks = {"SKU-1": "log-1", 'say "hi"': "back\\slash", "semi;colon": "a,b"}
    jar: SimpleCookie = SimpleCookie()
    jar[COOKIE_NAME] = stringify(clicks)
    value = jar[COOKIE_NAME].coded_value
    assert value.startswith('"') and "\\054" in value and "\\073" in value
    assert parse_click_value(value) == clicks
    assert parse_click_header(f"a=1; {COOKIE_NAME}={value}; b=2") == clicks


def test_http_cookies_latin1_octal_escape_drops_only_that_entry():
    # http.cookies writes "é" as \351, its code point, not its UTF-8 bytes like werkzeug;
    # on the wire that is an invalid UTF-8 byte, so only that entry goes.
    value = '"{\\"caf\\351\\":\\"1\\"\\054\\"tea\\":\\"2\\"}"'
    assert parse_click_value(value) == {"tea": "2"}


def test_quoted_cookie_with_an_escaped_backslash_before_a_quote():
    # JSON {"a\\":"b"}: key a\ ; quoted, the backslash doubles again.
    value = '"{\\"a\\\\\\\\\\":\\"b\\"}"'
    assert parse_click_value(value) == {"a\\": "b"}


def test_plus_stays_a_plus_and_percent_20_is_a_space():
    clicks = {"1+1 offer": "log+1"}
    value = widget_value(clicks)
    assert "%2B" in value and "%20" in value
    assert parse_click_value(value) == clicks
    # A literal + in the encoded value (a writer that did not escape it) is still a plus.
    assert parse_click_value("%7B%22a+b%22%3A%22c%22%7D") == {"a+b": "c"}


def test_non_ascii_ids_stay_intact():
    clicks = {"café": "été", "Bügeleisen": "日本語", "emoji 🛒": "ok"}
    assert parse_click_value(widget_value(clicks)) == clicks
    assert parse_click_value("%7B%22caf%C3%A9%22%3A%221%22%7D") == {"café": "1"}


def test_lower_case_escapes_are_decoded():
    assert parse_click_value("%7b%22caf%c3%a9%22%3a%221%22%7d") == {"café": "1"}


def test_raw_utf8_bytes_in_the_header_come_back_as_the_right_characters():
    # A writer that did not encode: the browser sends UTF-8 bytes, WSGI hands them over
    # as latin-1 text ("Ã©" for "é").
    header = as_wsgi('neuroon_clicks={"café":"été","日本":"x"}; other=1')
    assert "Ã©" in header
    assert parse_click_header(header) == {"café": "été", "日本": "x"}


def test_already_decoded_text_is_read_too():
    # Characters above U+00FF cannot be WSGI text: taken as real text.
    assert parse_click_value('{"日本":"x","a":"b"}') == {"日本": "x", "a": "b"}


def test_double_encoded_cookie_gives_every_click():
    value = encode_uri_component(widget_value(CLICKS))
    assert value.startswith("%257B")
    assert parse_click_value(value) == CLICKS
    assert parse_click_header(header_with(value)) == CLICKS


def test_triple_encoded_cookie_gives_every_click():
    value = encode_uri_component(encode_uri_component(widget_value(CLICKS)))
    assert MAX_DECODE_ROUNDS == 3
    assert parse_click_value(value) == CLICKS


def test_cookie_encoded_four_times_is_ignored():
    value = widget_value(CLICKS)
    for _ in range(MAX_DECODE_ROUNDS):
        value = encode_uri_component(value)
    assert parse_click_value(value) == {}


def test_partly_encoded_object_is_decoded():
    assert parse_click_value("{%22a%22:%22b%22,%22c%22:%22d%22}") == {"a": "b", "c": "d"}


def test_raw_json_is_never_percent_decoded():
    # An id that really contains "%41" survives in a raw JSON cookie...
    assert parse_click_value('{"a%41":"x%20y"}') == {"a%41": "x%20y"}
    # ...and in an encoded one, where it was written as %2541.
    assert parse_click_value(widget_value({"a%41": "x%20y"})) == {"a%41": "x%20y"}


def test_a_percent_that_is_not_an_escape_stays_literal():
    assert parse_click_value("%7B%22a%zz%22%3A%22100%%22%7D") == {"a%zz": "100%"}


def test_text_after_a_complete_object_is_ignored():
    assert parse_click_value('{"a":"1"} trailing') == {"a": "1"}


# -- several cookies ---------------------------------------------------------------------


def test_two_click_cookies_are_merged_the_first_one_winning():
    # Browsers send the cookie with the most specific path first.
    specific = widget_value({"shoe": "log-new", "hat": "log-hat"})
    general = widget_value({"shoe": "log-old", "bag": "log-bag"})
    header = f"neuroon_clicks={specific}; _ga=1; neuroon_clicks={general}"
    assert parse_click_header(header) == {
        "shoe": "log-new",
        "hat": "log-hat",
        "bag": "log-bag",
    }


def test_a_broken_click_cookie_does_not_hide_a_good_one():
    header = f"neuroon_clicks=%7Bgarbage; neuroon_clicks={widget_value({'a': '1'})}"
    assert parse_click_header(header) == {"a": "1"}


def test_merged_cookies_keep_at_most_max_entries():
    first = widget_value({f"a{i}": "x" for i in range(MAX_ENTRIES - 1)})
    second = widget_value({"b1": "y", "b2": "y", "a0": "z"})
    merged = parse_click_header(f"neuroon_clicks={first}; neuroon_clicks={second}")
    assert len(merged) == MAX_ENTRIES
    assert merged["a0"] == "x"
    assert merged["b1"] == "y"
    assert "b2" not in merged


# -- duplicates --------------------------------------------------------------------------


def test_duplicate_product_in_one_cookie_keeps_the_first_click():
    assert parse_click_value('{"a":"first","b":"2","a":"second"}') == {"a": "first", "b": "2"}


def test_duplicate_product_whose_first_click_is_invalid_keeps_the_valid_one():
    assert parse_click_value('{"a":17,"a":"second"}') == {"a": "second"}


# -- truncated cookies -------------------------------------------------------------------

TRUNCATED_BASE = {"SKU-1": "log-1", "café": "log-2", "SKU-3": "log-3"}


@pytest.mark.parametrize(
    ("cut_after", "expected"),
    [
        # %7B%22SKU-1%22%3A%22log-1%22%2C%22caf%C3%A9%22%3A%22log-2%22%2C%22SKU-3%22...
        ("%22log-1%22", {"SKU-1": "log-1"}),  # right after a complete entry
        ("%22log-1%22%2C", {"SKU-1": "log-1"}),  # after the comma
        ("%22log-1%22%2", {"SKU-1": "log-1"}),  # inside the comma's escape
        ("%22log-1%22%", {"SKU-1": "log-1"}),  # on the escape's percent sign
        ("%22caf", {"SKU-1": "log-1"}),  # inside a key
        ("%22caf%C3", {"SKU-1": "log-1"}),  # between the two bytes of é
        ("%22caf%C3%A", {"SKU-1": "log-1"}),  # inside é's second escape
        ("%22caf%C3%A9%22%3A", {"SKU-1": "log-1"}),  # after the colon
        ("%C3%A9%22%3A%22log-", {"SKU-1": "log-1"}),  # inside the value
        ("%C3%A9%22%3A%22log-2", {"SKU-1": "log-1"}),  # value complete but not closed
        ("%22log-2%22", {"SKU-1": "log-1", "café": "log-2"}),
        ("%22log-3%22", TRUNCATED_BASE),  # only the closing brace is missing
    ],
)
def test_truncated_cookie_keeps_the_clicks_before_the_cut(cut_after, expected):
    value = widget_value(TRUNCATED_BASE)
    # every marker occurs once in the value
    assert value.count(cut_after) == 1
    end = value.index(cut_after) + len(cut_after)
    assert parse_click_value(value[:end]) == expected
    assert parse_click_header(header_with(value[:end])) == expected


def test_truncated_raw_utf8_cookie_cut_inside_a_character_keeps_earlier_clicks():
    raw = as_wsgi('{"a":"1","café":"2"}')
    cut = raw[: raw.index("Ã") + 1]  # first byte of é only
    assert parse_click_value(cut) == {"a": "1"}


def test_truncated_double_encoded_cookie_keeps_the_clicks_before_the_cut():
    value = encode_uri_component(widget_value(TRUNCATED_BASE))
    end = value.index("log-2") + len("log-2%2522") - 1  # cut inside %2522
    assert parse_click_value(value[:end]) == {"SKU-1": "log-1"}


def test_truncated_quoted_cookie_keeps_the_clicks_before_the_cut():
    value = werkzeug_quoted(stringify(TRUNCATED_BASE))
    end = value.index("log-2") + len("log-2\\")  # inside the escaped quote
    assert parse_click_value(value[:end]) == {"SKU-1": "log-1"}
    end = value.index("log-2") + len('log-2\\"\\0')  # inside \054
    assert parse_click_value(value[:end]) == {"SKU-1": "log-1", "café": "log-2"}


def test_truncated_cookie_with_commas_inside_ids_keeps_the_clicks_before_the_cut():
    value = widget_value({"a,b": "c,d", "e,f,g,h,i,j": "k,l,m,n,o,p,q"})
    end = value.index("o%2Cp") + 1
    assert parse_click_value(value[:end]) == {"a,b": "c,d"}


def test_widget_cut_at_4096_bytes_keeps_the_complete_clicks():
    clicks = {f"SKU-{i:05d}-BLK-M": f"{i:08x}-51a4-4c3b-9e0f-2b8a6d4c1e90" for i in range(80)}
    value = widget_value(clicks)
    assert len(value) > 4096
    parsed = parse_click_value(value[:4096])
    assert 40 < len(parsed) < 80
    assert parsed == dict(list(clicks.items())[: len(parsed)])


def test_object_broken_in_the_middle_keeps_the_clicks_before_the_break():
    assert parse_click_value('{"a":"1","b":undefined,"c":"3"}') == {"a": "1"}
    assert parse_click_value('{"a":"1" "b":"2"}') == {"a": "1"}
    assert parse_click_value('{"a":"1",}') == {"a": "1"}


# -- bad entries: dropped alone ----------------------------------------------------------


def test_number_click_is_dropped_others_kept():
    assert parse_click_value('{"a":1,"b":"2","c":1.5}') == {"b": "2"}


@pytest.mark.parametrize(
    "number",
    [
        "1" + "0" * 5000,
        "-" + "9" * 4400,
        "1e999",
        "-1e999",
        "NaN",
        "Infinity",
        "-Infinity",
        "0.5e-99999",
    ],
)
def test_a_number_no_decoder_can_hold_drops_only_its_entry(number):
    # 5,000 digits is over int's digit limit (a ValueError, not a syntax error), 1e999 is
    # inf: neither may cost the valid entries around it.
    cookie = f'{{"a":"1","b":{number},"c":"3"}}'
    assert parse_click_value(cookie) == {"a": "1", "c": "3"}
    assert parse_click_value(quote(cookie, safe="")) == {"a": "1", "c": "3"}


def test_null_and_boolean_clicks_are_dropped_others_kept():
    assert parse_click_value('{"a":null,"b":"2","c":true,"d":false}') == {"b": "2"}


def test_nested_object_or_array_click_is_dropped_others_kept():
    value = '{"a":{"x":"y"},"b":"2","c":["3"],"d":[{"e":"f"}]}'
    assert parse_click_value(value) == {"b": "2"}


def test_empty_product_or_search_log_id_is_dropped_others_kept():
    assert parse_click_value('{"":"1","b":"","c":"3"}') == {"c": "3"}
    assert parse_click_value(widget_value({"": "1", "b": "", "c": "3"})) == {"c": "3"}


def test_overlong_id_is_dropped_others_kept():
    longest = "p" * MAX_ID_LENGTH
    too_long = "q" * (MAX_ID_LENGTH + 1)
    clicks = {longest: "ok", "a": longest, too_long: "x", "b": too_long, "c": "3"}
    assert parse_click_value(widget_value(clicks)) == {longest: "ok", "a": longest, "c": "3"}


@pytest.mark.parametrize(
    "bad_id",
    ["tab\there", "new\nline", "nul\x00", "del\x7f", "c1\x85", "c1\x9f"],
    ids=["tab", "newline", "nul", "del", "c1-nel", "c1-last"],
)
def test_id_with_a_control_character_is_dropped_others_kept(bad_id):
    for clicks in ({bad_id: "1", "ok": "2"}, {"ok": "2", "k": bad_id}):
        # Escaped in JSON (JSON.stringify), escaped for the URL, and raw.
        assert parse_click_value(widget_value(clicks)) == {"ok": "2"}
        assert parse_click_value(json.dumps(clicks)) == {"ok": "2"}
        assert parse_click_value(encode_uri_component(stringify(clicks))) == {"ok": "2"}
        raw_control = "{" + ",".join(f'"{k}":"{v}"' for k, v in clicks.items()) + "}"
        assert parse_click_value(as_wsgi(raw_control)) == {"ok": "2"}


def test_id_with_an_escaped_lone_surrogate_is_dropped_others_kept():
    assert parse_click_value('{"a\\ud800":"1","b":"2"}') == {"b": "2"}


def test_invalid_utf8_sequence_drops_only_its_entry():
    # %FF is never valid UTF-8; raw \xff arrives through WSGI as "ÿ".
    assert parse_click_value("%7B%22a%FF%22%3A%221%22%2C%22b%22%3A%222%22%7D") == {"b": "2"}
    assert parse_click_value('{"a\xff":"1","b":"2","c":"\xc3"}') == {"b": "2"}


def test_ids_with_unusual_but_printable_characters_are_kept():
    clicks = {"no\u00a0break": "zero\u200bwidth", "£ 5 °C ®": "x"}
    assert parse_click_value(widget_value(clicks)) == clicks


def test_more_than_max_entries_keeps_the_first_ones():
    clicks = {f"p{i}": f"l{i}" for i in range(MAX_ENTRIES + 10)}
    parsed = parse_click_value(widget_value(clicks))
    assert parsed == {f"p{i}": f"l{i}" for i in range(MAX_ENTRIES)}


# -- not a click map at all --------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ['["a","b"]', '[["a","b"]]', '"a string"', "42", "null", "true"],
    ids=["array", "array-of-pairs", "string", "number", "null", "true"],
)
def test_json_that_is_not_an_object_gives_no_clicks(value):
    assert parse_click_value(value) == {}
    assert parse_click_value(encode_uri_component(value)) == {}


@pytest.mark.parametrize(
    "value",
    ["garbage", "%%%", "{", "{{{{", "%7B", '{"a', '{"a":', "}", "\\", '"', '""', "%", "%7"],
)
def test_garbage_gives_no_clicks(value):
    assert parse_click_value(value) == {}
    assert parse_click_header(f"neuroon_clicks={value}") == {}


def test_deeply_nested_value_gives_the_clicks_before_it():
    assert parse_click_value('{"a":"1","b":' + "[" * (MAX_VALUE_LENGTH - 20)) == {"a": "1"}
    nested = '{"a":"1","b":' + "[" * 50 + "]" * 50 + ',"c":"3"}'
    assert parse_click_value(nested) == {"a": "1", "c": "3"}
    # Deeper than the interpreter's recursion limit, the value counts as a break.
    deep = '{"a":"1","b":' + "[" * 5000 + "]" * 5000 + ',"c":"3"}'
    assert parse_click_value(deep) == {"a": "1"}


def test_oversized_value_is_ignored_with_a_short_debug_log(caplog):
    clicks = {f"p{i:06d}": "x" * 40 for i in range(400)}
    value = widget_value(clicks)
    assert len(value) > MAX_VALUE_LENGTH
    with caplog.at_level(logging.DEBUG, logger="flask_neuroon.cookies"):
        assert parse_click_value(value) == {}
        assert parse_click_header(header_with(value)) == {}
    assert caplog.records
    for record in caplog.records:
        message = record.getMessage()
        assert "MAX_VALUE_LENGTH" in message
        assert len(message) < 300


def test_dropped_entries_are_logged_at_debug_without_full_values(caplog):
    huge = "z" * 5000
    with caplog.at_level(logging.DEBUG, logger="flask_neuroon.cookies"):
        assert parse_click_value(json.dumps({huge: "1", "ok": "2"})) == {"ok": "2"}
        assert parse_click_value("%7B" + "%22a" * 3000) == {}
    messages = [record.getMessage() for record in caplog.records]
    assert any("dropped 1 entries" in message for message in messages)
    assert all(record.levelno == logging.DEBUG for record in caplog.records)
    assert all(len(message) < 500 for message in messages)


def test_nothing_is_logged_for_a_good_cookie(caplog):
    with caplog.at_level(logging.DEBUG, logger="flask_neuroon.cookies"):
        assert parse_click_header(header_with(widget_value(CLICKS))) == CLICKS
    assert caplog.records == []


# -- properties --------------------------------------------------------------------------

# Valid ids: non-empty, short, no control character or surrogate (a JSON.stringify map).
ids = st.text(
    st.characters(exclude_categories=("Cc", "Cs")),
    min_size=1,
    max_size=10,
)
click_maps = st.dictionaries(ids, ids, max_size=4)


def raw_value(clicks: dict[str, str]) -> str:
    return as_wsgi(stringify(clicks))


def raw_ascii_spaced_value(clicks: dict[str, str]) -> str:
    return json.dumps(clicks)


def werkzeug_value(clicks: dict[str, str]) -> str:
    return werkzeug_quoted(stringify(clicks))


def double_encoded_value(clicks: dict[str, str]) -> str:
    return encode_uri_component(widget_value(clicks))


ENCODINGS: dict[str, Callable[[dict[str, str]], str]] = {
    "widget": widget_value,
    "raw": raw_value,
    "raw-ascii-spaced": raw_ascii_spaced_value,
    "werkzeug-quoted": werkzeug_value,
    "double-encoded": double_encoded_value,
}


def is_valid_map(result: object) -> bool:
    return (
        isinstance(result, dict)
        and len(result) <= MAX_ENTRIES
        and all(
            isinstance(item, str)
            and 0 < len(item) <= MAX_ID_LENGTH
            and not any(
                ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in item
            )
            for pair in result.items()
            for item in pair
        )
    )


@settings(max_examples=150, deadline=None)
@given(clicks=click_maps, encoding=st.sampled_from(sorted(ENCODINGS)))
@example(clicks={"é": "ü", "a": "b"}, encoding="widget")
@example(clicks={'"': "\\", "%41": "+"}, encoding="werkzeug-quoted")
def test_any_map_encoded_any_way_parses_back_and_every_truncation_is_a_subset(clicks, encoding):
    value = ENCODINGS[encoding](clicks)
    assert parse_click_value(value) == clicks
    full = set(clicks.items())
    for end in range(len(value)):
        result = parse_click_value(value[:end])
        assert set(result.items()) <= full, (value[:end], result)


@settings(max_examples=100, deadline=None)
@given(
    maps=st.lists(click_maps, min_size=1, max_size=3),
    others=st.lists(
        st.tuples(
            st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
            st.from_regex(r"[\w.%-]{0,12}", fullmatch=True),
        ),
        max_size=3,
    ),
)
def test_any_header_merges_every_click_cookie_first_one_winning(maps, others):
    parts = [f"{name}={value}" for name, value in others if name != COOKIE_NAME]
    for i, clicks in enumerate(maps):
        parts.insert(min(i * 2, len(parts)), f"{COOKIE_NAME}={widget_value(clicks)}")
    expected: dict[str, str] = {}
    for clicks in maps:
        for key, value in clicks.items():
            expected.setdefault(key, value)
    assert parse_click_header("; ".join(parts)) == expected


def first_valid_wins(pairs: list[tuple[str, object]]) -> dict[str, str]:
    """The documented rule, written the obvious way."""
    expected: dict[str, str] = {}
    for key, value in pairs:
        if is_valid_map({key: value}) and key not in expected:
            expected[key] = value  # type: ignore[assignment]
    return expected


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "é", "a b", "", '"', "x" * (MAX_ID_LENGTH + 1)]),
            st.one_of(ids, st.sampled_from(["", "\x01", 7, None, ["x"]])),
        ),
        max_size=8,
    ),
    separators=st.sampled_from([(",", ":"), (", ", ": ")]),
)
def test_any_object_with_duplicates_keeps_the_first_valid_click(pairs, separators):
    item, key_sep = separators
    text = (
        "{"
        + item.join(
            json.dumps(key, ensure_ascii=False) + key_sep + json.dumps(value, ensure_ascii=False)
            for key, value in pairs
        )
        + "}"
    )
    expected = first_valid_wins(pairs)
    assert parse_click_value(encode_uri_component(text)) == expected
    assert parse_click_value(as_wsgi(text)) == expected


JSONISH = st.text(st.sampled_from('{}[]":,\\ u0123456789abcdefABCDEF%+-.éÃ©\x00\x7f\x85\ud800ntrl'))


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), JSONISH, st.binary().map(lambda data: data.decode("latin-1"))))
def test_any_text_never_raises_and_gives_a_valid_map(value):
    assert is_valid_map(parse_click_value(value))
    assert is_valid_map(parse_click_value("{" + value))
    assert is_valid_map(parse_click_value('{"a":"1",' + value))
    assert is_valid_map(parse_click_header(value))
    assert is_valid_map(
        parse_click_header(f"a=1; neuroon_clicks={value}; neuroon_clicks={{{value}")
    )


@settings(max_examples=300, deadline=None)
@given(st.binary().map(lambda data: data.decode("latin-1")))
def test_any_bytes_in_the_header_never_raise(header):
    assert is_valid_map(parse_click_header(header))
    assert is_valid_map(parse_click_header("neuroon_clicks=" + header))


# -- internals the fast path relies on ---------------------------------------------------


PERCENT_TOKENS = [
    *(bytes([c]) for c in b"%=\r\n09aFgx+ \xff"),
    *(b"%3D", b"%25", b"%C3%A9", b"%zz", b"%%", b"=41", b"%\n", b"%\r\n"),
]


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.binary(),
        st.lists(st.sampled_from(PERCENT_TOKENS), max_size=30).map(b"".join),
    )
)
def test_percent_decoding_fast_path_matches_urllib(data):
    # _percent_decode drops a cut escape at the very end; elsewhere it is unquote_to_bytes.
    cut = data.find(b"%", len(data) - 2)
    expected = unquote_to_bytes(data[:cut] if cut >= 0 else data)
    assert cookies._percent_decode(data) == expected


@settings(max_examples=200, deadline=None)
@given(
    clicks=st.dictionaries(ids, st.one_of(ids, st.integers(), st.lists(ids, max_size=2))),
    spaced=st.booleans(),
)
def test_reclosing_a_cut_object_finds_what_the_entry_walker_finds(clicks, spaced):
    text = json.dumps(clicks, ensure_ascii=False, separators=(", ", ": ") if spaced else (",", ":"))
    for end in range(1, len(text)):
        prefix = text[:end]
        error: ValueError | None = None
        try:
            cookies._DECODER.raw_decode(prefix)
        except ValueError as raised:
            error = raised
        if error is not None:
            reclosed = cookies._reclose(prefix, error)
            assert reclosed is None or reclosed == cookies._walk(prefix), prefix


def test_kept_parses_never_confuse_two_cookies_alike_at_both_ends():
    # The memory of recent cookies finds an entry by the value's two ends: two shoppers'
    # cookies that differ only in the middle must each get their own clicks, every time.
    head = {f"SKU-HEAD-{n}": f"log-head-{n}" for n in range(4)}
    tail = {f"SKU-TAIL-{n}": f"log-tail-{n}" for n in range(4)}
    one = {**head, "SKU-MIDDLE": "log-one", **tail}
    two = {**head, "SKU-MIDDLE": "log-two", **tail}
    first, second = widget_value(one), widget_value(two)
    assert len(first) == len(second) and first[:100] == second[:100]
    assert first[-100:] == second[-100:] and first != second
    for _ in range(3):  # seen, then kept, then found
        assert parse_click_value(first) == one
        assert parse_click_value(second) == two
    kept = parse_click_value(first)
    kept["SKU-MIDDLE"] = "changed by the caller"
    assert parse_click_value(first) == one  # every hit is a copy of its own


def test_a_kept_parse_found_in_the_header_never_hides_what_else_the_header_holds():
    # A header whose cookie was parsed before is answered from the kept parse without
    # copying the value out; anything that needs the full walk must still get it.
    value = widget_value(CLICKS)
    header = header_with(value)
    for _ in range(3):  # seen, then kept, then found in place
        assert parse_click_header(header) == CLICKS
    second = f"{header}; {COOKIE_NAME}={widget_value({'SKU-OTHER-PATH': 'log-9'})}"
    assert parse_click_header(second) == {**CLICKS, "SKU-OTHER-PATH": "log-9"}
    inside = f"note={COOKIE_NAME}={widget_value({'SKU-FAKE': 'x'})}; {COOKIE_NAME}={value}"
    assert parse_click_header(inside) == CLICKS
    assert parse_click_header(f"x{COOKIE_NAME}={value}") == {}  # another cookie's name
    other = value.replace("SKU-10293", "SKU-10294")  # same length and end, not the same
    for _ in range(3):
        assert "SKU-10294-BLK-M" in parse_click_header(header_with(other))
        assert parse_click_header(header) == CLICKS
    changed = parse_click_header(header)
    changed["SKU-10293-BLK-M"] = "changed by the caller"
    assert parse_click_header(header) == CLICKS  # every caller gets a copy of its own
    assert ClickMap(header) == CLICKS and dict(ClickMap(header).items()) == CLICKS
