"""Host ranges as the guidelines write them (11.1, 11.3), and ansible's edge cases."""

import pytest

from engine.errors import RunbookError
from engine.hosts import HostPatternError, expand_hosts

CAL = [f"spb-br-sys-cal-{i}" for i in range(8)]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        pytest.param("exflgateway", ["exflgateway"], id="no-brackets"),
        pytest.param("bastion.desy.de", ["bastion.desy.de"], id="dotted-name"),
        pytest.param("spb-br-sys-cal-[0-7]", CAL, id="guidelines-11.1"),
        pytest.param("spb-br-sys-cal-[0:7]", CAL, id="colon-separator"),
        pytest.param("fxe-br-sys-cal-[0-8]",
                     [f"fxe-br-sys-cal-{i}" for i in range(9)], id="guidelines-11.3"),
        pytest.param("node[01-12]", [f"node{i:02d}" for i in range(1, 13)], id="zero-padding"),
        pytest.param("node[001:003]", ["node001", "node002", "node003"], id="padding-3"),
        pytest.param("node[8-11]", ["node8", "node9", "node10", "node11"], id="no-padding"),
        pytest.param("a[1:2]", ["a1", "a2"], id="ansible-simple"),
        pytest.param("a[1:10:2]", ["a1", "a3", "a5", "a7", "a9"], id="step"),
        pytest.param("h[0-10-5]", ["h0", "h5", "h10"], id="step-with-dash"),
        pytest.param("h[:2]", ["h0", "h1", "h2"], id="empty-start-is-zero"),
        pytest.param("a[a:b]", ["aa", "ab"], id="alpha"),
        pytest.param("x[A-C]", ["xA", "xB", "xC"], id="alpha-upper"),
        pytest.param("a[a:i:3]", ["aa", "ad", "ag"], id="alpha-step"),
        pytest.param("a[a:b][c:d]", ["aac", "aad", "abc", "abd"], id="two-alpha-ranges"),
        pytest.param("a[0:1][2:3]", ["a02", "a03", "a12", "a13"], id="two-numeric-ranges"),
        pytest.param("r[1-2]c[a-b]", ["r1ca", "r1cb", "r2ca", "r2cb"], id="mixed-ranges"),
        pytest.param("[1-2].test", ["1.test", "2.test"], id="range-first"),
        pytest.param("db[3-3]", ["db3"], id="single-element"),
        pytest.param("x[5:6:10]", ["x5"], id="step-larger-than-span"),
    ],
)
def test_expand_hosts(pattern, expected):
    assert expand_hosts(pattern) == expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        pytest.param("node[7-0]", "reversed", id="reversed"),
        pytest.param("node[c-a]", "reversed", id="reversed-alpha"),
        pytest.param("node[1-c]", "mixes a number and a letter", id="mixed-bounds"),
        pytest.param("node[a-Z]", "mixes lower and upper case", id="mixed-case"),
        pytest.param("node[]", "empty brackets", id="empty-brackets"),
        pytest.param("node[1-2", "never closed", id="unclosed"),
        pytest.param("node1-2]", "no matching '['", id="unopened"),
        pytest.param("node[[1-2]]", "nested", id="nested"),
        pytest.param("node[0:10:0]", "step of '[0:10:0]' is zero", id="zero-step"),
        pytest.param("node[0:10:x]", "not a positive integer", id="bad-step"),
        pytest.param("node[5]", "must be START-END", id="single-value"),
        pytest.param("node[1-2-3-4]", "must be START-END", id="too-many-fields"),
        pytest.param("node[01-100]", "differ in width", id="padding-width"),
        pytest.param("node[aa-bb]", "numbers or single letters", id="multi-letter"),
        pytest.param("node[1,3]", "must be START-END", id="comma-list"),
        pytest.param("", "non-empty", id="empty"),
        pytest.param("two words", "whitespace", id="whitespace"),
    ],
)
def test_expand_hosts_rejects(pattern, message):
    with pytest.raises(HostPatternError) as info:
        expand_hosts(pattern)
    assert message in str(info.value)
    assert f"'{pattern}'" in str(info.value)


def test_host_pattern_error_is_a_value_error_and_a_runbook_error():
    with pytest.raises(ValueError):
        expand_hosts("a[2-1]")
    with pytest.raises(RunbookError):
        expand_hosts("a[2-1]")
