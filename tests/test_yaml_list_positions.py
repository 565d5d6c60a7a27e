"""Line and column of list ITEMS (not only of mapping keys): a finding about a turn of
training_messages points at that turn's own `- role:` line, never one line early or late."""

from __future__ import annotations

import json

from _config_util import line_of, load_yaml, write_set
from typer.testing import CliRunner

from vlmctl.cli import app

TEXT = (
    "message_format:\n"
    "  training_messages:\n"
    "    - role: user\n"
    "      content:\n"
    "        - type: image\n"
    "        -   type: text\n"
    "            text: hi\n"
    "    - {role: assistant, content: hello}\n"
    "    -\n"
    "      role: user\n"
    "lst: [1, 22, 333]\n"
    "block:\n"
    "- a\n"
    "-   b\n"
)


def _pos_of(needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, col) of the n-th `needle` in TEXT, found by plain string search."""
    start = -1
    for _ in range(occurrence):
        start = TEXT.index(needle, start + 1)
    line = TEXT.count("\n", 0, start) + 1
    col = start - (TEXT.rfind("\n", 0, start) + 1) + 1
    return line, col


def test_every_list_item_has_its_own_line_and_column(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(TEXT, encoding="utf-8")
    pos = load_yaml(p).positions
    turns = ("message_format", "training_messages")
    assert pos[turns + (0,)] == _pos_of("role: user")
    assert pos[turns + (0, "content", 0)] == _pos_of("type: image")
    assert pos[turns + (0, "content", 1)] == _pos_of("type: text")
    assert pos[turns + (1,)] == _pos_of("{role: assistant")
    assert pos[turns + (2,)] == _pos_of(
        "role: user", 2
    )  # an item whose content starts below its dash
    assert pos[("lst", 0)] == _pos_of("1, 22")
    assert pos[("lst", 1)] == _pos_of("22, 333")
    assert pos[("lst", 2)] == _pos_of("333")
    assert pos[("block", 0)] == _pos_of("a\n")
    assert pos[("block", 1)] == _pos_of("b\n")


def test_last_turn_warning_points_at_the_last_turn(tmp_path):
    extra = '        - role: "user"\n          content: "{question_column} (again)"\n'
    old = '                text: "{answer_column}"\n'
    d = write_set(tmp_path / "s", collator=(old, old + extra))
    r = CliRunner().invoke(app, ["validate", str(d), "--config-only", "--format", "json"])
    found = [
        f
        for f in json.loads(r.stdout)["config_sets"][0]["findings"]
        if f["code"] == "assistant-last"
    ]
    assert len(found) == 1, r.stdout
    path = d / "vlm_collator_config.yaml"
    line = line_of(path, "(again)") - 1  # the `- role: "user"` line of the added turn
    assert path.read_text().splitlines()[line - 1].strip() == '- role: "user"'
    assert (found[0]["line"], found[0]["col"]) == (line, 11)
