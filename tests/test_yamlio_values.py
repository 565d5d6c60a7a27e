"""What the YAML reader hands on: plain Python types (never ruamel's wrappers), text for odd
YAML types, addressable non-string keys, a tag finding that says which tag and where, the
alias-bomb limit at its exact boundary, and a line for an error that only marks its context.
Each case was a mutation (scripts/mutation.py yaml-positions) that no test caught."""

from __future__ import annotations

import pytest

from vlmctl.config.yamlio import MAX_VALUES, _mark, read_yaml


def _read(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path, *read_yaml(path)


def test_values_are_plain_python_types(tmp_path):
    """ruamel's ScalarFloat/HexInt/quoted strings would leak into configs and JSON output."""
    _, doc, problems = _read(
        tmp_path, "n: null\nb: true\nf: false\nx: 1.5\nh: 0x1F\ni: 3\ns: 'q'\nd: 2020-01-02\n"
    )
    assert problems == []
    assert doc.data["n"] is None
    assert doc.data["b"] is True and doc.data["f"] is False  # not 1 / 0
    for key, kind, value in [("x", float, 1.5), ("h", int, 31), ("i", int, 3), ("s", str, "q")]:
        assert type(doc.data[key]) is kind, key
        assert doc.data[key] == value
    assert doc.data["d"] == "2020-01-02"


def test_other_yaml_types_become_their_text(tmp_path):
    """A set or binary value is not a config type: it is passed on as text (then checked as a
    string), never as an object or as the word 'None'."""
    _, doc, problems = _read(tmp_path, "a: !!set {x, y}\nb: !!binary aGk=\n")
    assert problems == []
    assert type(doc.data["a"]) is str and "x" in doc.data["a"] and "y" in doc.data["a"]
    assert doc.data["b"] == "b'hi'"


def test_non_string_keys_stay_addressable_as_text(tmp_path):
    _, doc, problems = _read(tmp_path, "1: x\nfalse: y\nname: z\n")
    assert problems == []
    assert doc.data == {"1": "x", "False": "y", "name": "z"}
    assert doc.positions[("name",)] == (3, 1)


def test_a_tag_finding_names_the_tag_the_file_and_the_line(tmp_path):
    path, doc, problems = _read(tmp_path, "a: 1\nb:\n  c: !foo x\n")
    assert doc is None and len(problems) == 1
    p = problems[0]
    assert p.code == "yaml-tag"
    assert p.message == "YAML tag !foo is not supported"
    assert p.file == str(path)
    assert (p.line, p.col) == (3, 3)
    assert p.hint and p.hint.startswith("remove the tag: config values are plain")


def test_a_tag_inside_a_list_is_found_at_its_item(tmp_path):
    """List items report into the same findings as mapping values (not lost, not a crash)."""
    _, doc, problems = _read(tmp_path, "a:\n  - 1\n  - !foo x\n")
    assert doc is None
    assert [(p.code, p.line, p.col) for p in problems] == [("yaml-tag", 3, 5)]


def test_a_standard_tag_on_a_scalar_is_named_too(tmp_path):
    """`!!str x` is kept by ruamel as a tagged scalar: the finding names its full tag."""
    _, doc, problems = _read(tmp_path, "a: !!str x\n")
    assert doc is None
    assert [p.message for p in problems] == ["YAML tag tag:yaml.org,2002:str is not supported"]


def _aliased_file(padding: int) -> str:
    """1004 + 98 * 1000 + padding values once the 98 aliases of `a` are expanded."""
    return (
        "a: &a ["
        + ", ".join(["1"] * 999)
        + "]\nv: ["
        + ", ".join(["*a"] * 98 + ["1"] * padding)
        + "]\n"
    )


def test_the_value_limit_is_exact(tmp_path):
    """MAX_VALUES counts every mapping, key, list and item once aliases are expanded: a file of
    exactly MAX_VALUES values loads, one more is refused. (The expansion budget in `_plain`
    must agree with the up-front count: a stricter budget would refuse a legal file.)"""
    padding = MAX_VALUES - 1004 - 98 * 1000
    _, doc, problems = _read(tmp_path, _aliased_file(padding))
    assert problems == [], problems
    assert len(doc.data["v"]) == 98 + padding and doc.data["v"][0] == [1] * 999
    _, doc, problems = _read(tmp_path, _aliased_file(padding + 1))
    assert doc is None and [p.code for p in problems] == ["yaml-alias-bomb"]


class _Mark:
    def __init__(self, line: int, column: int):
        self.line, self.column = line, column


class _OnlyContext(Exception):
    """A parser error that marks only where its context starts (problem_mark None)."""

    problem_mark = None
    context_mark = _Mark(4, 2)


class _NoMarks(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "where"),
    [(_OnlyContext(), (5, 3)), (_NoMarks(), (None, None))],
)
def test_an_error_marked_only_by_its_context_still_has_a_line(exc, where):
    assert _mark(exc) == where
