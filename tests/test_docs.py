"""The project's own docs say what the code does: the state diagram is the state machine."""

import re
from pathlib import Path

from orchestrator.core.model import TRANSITIONS

ARCHITECTURE = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"


def test_the_state_diagram_draws_exactly_the_transitions() -> None:
    """Each forward move of core/model.py's TRANSITIONS is one arrow of the diagram, no more."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    start = text.index("```mermaid")
    diagram = text[start : text.index("```", start + 3)]
    arrows = set(re.findall(r"^\s*(\w+) --> (\w+)", diagram, re.MULTILINE))
    moves = {(old.value, new.value) for old, nexts in TRANSITIONS.items() for new in nexts}
    assert arrows == moves
