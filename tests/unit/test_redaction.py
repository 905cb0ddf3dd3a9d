"""What the API shows of a journaled request (agentainer/redaction.py)."""

from agentainer.config import SETTINGS
from agentainer.journal.redaction import Redactor
from agentainer.units import parse_header_names, parse_names

DEFAULTS = {setting.name: setting for setting in SETTINGS}
REDACTOR = Redactor(parse_header_names(DEFAULTS["redact_headers"].default),
                    parse_names(DEFAULTS["redact_params"].default))


def test_configured_headers_are_redacted_in_any_case_and_others_kept():
    shown = REDACTOR.headers([("authorization", "Basic x"), ("X-API-KEY", "k"),
                              ("x-auth-token", "t"), ("X-Access-Token", "a"),
                              ("Cookie", "s=1"), ("Accept", "*/*")])
    assert shown == [("authorization", "[redacted]"), ("X-API-KEY", "[redacted]"),
                     ("x-auth-token", "[redacted]"), ("X-Access-Token", "[redacted]"),
                     ("Cookie", "[redacted]"), ("Accept", "*/*")]


def test_query_values_are_redacted_and_keys_kept_as_sent():
    assert REDACTOR.query("a=1&Token=x&api%5Fkey=y&access_token&b=&token=") == \
        "a=1&Token=[redacted]&api%5Fkey=[redacted]&access_token&b=&token=[redacted]"


def test_a_record_is_redacted_in_a_copy_request_and_response_alike():
    stored = {"query": "token=x", "headers": [["Cookie", "s=1"]],
              "resp_headers": [["Set-Cookie", "s=2"], ["Content-Type", "text/plain"]]}
    shown = REDACTOR.record(stored)
    assert shown == {"query": "token=[redacted]", "headers": [("Cookie", "[redacted]")],
                     "resp_headers": [("Set-Cookie", "[redacted]"),
                                      ("Content-Type", "text/plain")]}
    assert stored["headers"] == [["Cookie", "s=1"]]


def test_only_the_configured_names_are_redacted():
    custom = Redactor(["X-Mine"], ["sig"])
    assert custom.headers([("Authorization", "a"), ("x-mine", "m")]) == [
        ("Authorization", "a"), ("x-mine", "[redacted]")]
    assert custom.query("token=1&SIG=2") == "token=1&SIG=[redacted]"


def test_semicolons_separate_and_bracketed_names_match_by_each_part():
    assert REDACTOR.query("a=1;token=x&user[Password]=y&ids[]=1&api_key[]=z;b") == \
        "a=1;token=[redacted]&user[Password]=[redacted]&ids[]=1&api_key[]=[redacted];b"
