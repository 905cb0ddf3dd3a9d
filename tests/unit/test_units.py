import math
import re
from datetime import datetime, timezone

import pytest

from agentainer import units

MIB = 1024 ** 2
GIB = 1024 ** 3


@pytest.mark.parametrize("value, seconds", [
    (30, 30.0),
    (2.5, 2.5),
    ("30", 30.0),
    ("30s", 30.0),
    ("500ms", 0.5),
    ("5m", 300.0),
    ("1h", 3600.0),
    (" 1.5 s ", 1.5),
    ("0", 0.0),
])
def test_parse_duration(value, seconds):
    assert units.parse_duration(value) == seconds


@pytest.mark.parametrize("value", [-1, -0.5, "-5s", "soon", "5 minutes", "5M", "", "1d", True])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        units.parse_duration(value)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_parse_duration_rejects_non_finite(value):
    # NaN and infinity are not durations (NaN would slip past every comparison).
    with pytest.raises(ValueError):
        units.parse_duration(value)


@pytest.mark.parametrize("value, nano", [
    ("1", 1_000_000_000),
    (1, 1_000_000_000),
    ("0.5", 500_000_000),
    (0.5, 500_000_000),
    ("500m", 500_000_000),
    ("1m", 1_000_000),
    ("2", 2_000_000_000),
    ("1000000000", 1_000_000_000),
])
def test_parse_cpu(value, nano):
    assert units.parse_cpu(value) == nano


@pytest.mark.parametrize("value", ["lots", "", "1x", "0", 0, "-1", "0.5m", "nan"])
def test_parse_cpu_rejects(value):
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        units.parse_cpu(value)


@pytest.mark.parametrize("value", ["inf", "1e400m"])
def test_parse_cpu_rejects_infinity_with_value_error(value):
    # int(float("inf")) overflows; it must surface as ValueError.
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        units.parse_cpu(value)


@pytest.mark.parametrize("value, size", [
    ("512m", 512 * MIB),
    ("512Mi", 512 * MIB),
    ("512MB", 512 * MIB),
    ("512mib", 512 * MIB),
    ("1g", GIB),
    ("1G", GIB),
    ("1.5g", 3 * GIB // 2),
    ("536870912", 512 * MIB),
    (536870912, 512 * MIB),
    ("6m", 6 * MIB),
])
def test_parse_memory_uses_binary_units(value, size):
    assert units.parse_memory(value) == size


@pytest.mark.parametrize("value", ["1k", "1024", "5m", "0"])
def test_parse_memory_rejects_below_docker_minimum(value):
    with pytest.raises(ValueError, match=f"{value!r} is below"):
        units.parse_memory(value)


@pytest.mark.parametrize("value", ["lots", "", "512x", "-512m", "1gg", "m"])
def test_parse_memory_rejects_garbage(value):
    with pytest.raises(ValueError, match=f"{value!r} is not a memory size"):
        units.parse_memory(value)


@pytest.mark.parametrize("value", [True, "1", "true", "TRUE", "yes", "on", " On "])
def test_parse_bool_true(value):
    assert units.parse_bool(value) is True


@pytest.mark.parametrize("value", [False, "0", "false", "False", "no", "off"])
def test_parse_bool_false(value):
    assert units.parse_bool(value) is False


@pytest.mark.parametrize("value", ["", "maybe", "2", "y"])
def test_parse_bool_rejects(value):
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        units.parse_bool(value)


@pytest.mark.parametrize("value, port", [("1", 1), (8081, 8081), ("65535", 65535)])
def test_parse_port(value, port):
    assert units.parse_port(value) == port


@pytest.mark.parametrize("value", ["0", 0, "65536", "-1", "http", "", None, "80.0"])
def test_parse_port_rejects(value):
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        units.parse_port(value)


@pytest.mark.parametrize("value, number", [("1", 1), (32, 32), (" 7 ", 7)])
def test_parse_positive_int(value, number):
    assert units.parse_positive_int(value) == number


@pytest.mark.parametrize("value", ["0", 0, "-3", "1.5", "many", None])
def test_parse_positive_int_rejects(value):
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        units.parse_positive_int(value)


NOW = 1_800_000_000.0


@pytest.mark.parametrize("value, expected", [
    ("10m", NOW - 600),
    ("2h", NOW - 7200),
    ("30", NOW - 30),
    ("1700000000", 1_700_000_000.0),
    ("1700000000.5", 1_700_000_000.5),
    ("999999999h", 0.0),
])
def test_parse_since(value, expected):
    assert units.parse_since(value, NOW) == expected


@pytest.mark.parametrize("value, expected", [
    ("10m", "10m"),
    ("1700000000", "1700000000"),
    ("2026-01-01T00:00:00Z", f"{datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp():.6f}"),
    ("2026-01-01T02:00:00+02:00",
     f"{datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp():.6f}"),
    ("1990-01-01", "1000000000.000000"),
])
def test_since_param_converts_iso_8601_for_the_api(value, expected):
    assert units.since_param(value, NOW) == expected


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z"])
def test_since_param_rejects(value):
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        units.since_param(value, NOW)


@pytest.mark.parametrize("value", ["yesterday", "", "-5m", "2026-01-01T00:00:00Z", " 5m",
                                   "1e9", "nan"])
def test_parse_since_rejects(value):
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        units.parse_since(value, NOW)
