"""The item state machine: forward only within an attempt, attempts never go down."""

import json
from dataclasses import replace
from typing import Any

import pytest

from orchestrator.core.model import (
    FORWARD_WITHIN_ATTEMPT,
    Item,
    Phase,
    PublicState,
    Row,
    TransitionError,
    item_token,
)
from orchestrator.core.outcome import is_finished, merge_list
from orchestrator.state.codec import item_from_dict, item_to_dict


def make_row(image_id: str = "img-1", line: int = 2, **changes: Any) -> Row:
    return replace(Row(line, "default", image_id, "cn-north-4", "cn-east-3"), **changes)


def test_forward_moves_are_allowed() -> None:
    """pending -> submitting -> running -> succeeded is the happy path."""
    item = Item(row=make_row())
    item = item.advance(Phase.SUBMITTING).advance(Phase.RUNNING, job_id="j1")
    assert item.advance(Phase.SUCCEEDED).phase == Phase.SUCCEEDED


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (Phase.RUNNING, Phase.SUBMITTING),
        (Phase.SUBMITTING, Phase.PENDING),
        (Phase.SUCCEEDED, Phase.RUNNING),
        (Phase.ADOPTED, Phase.RECONCILING),
        (Phase.REJECTED, Phase.SUBMITTING),
    ],
)
def test_backward_moves_are_refused(start: Phase, to: Phase) -> None:
    """A phase never moves backwards within an attempt."""
    item = Item(row=make_row(), phase=start)
    with pytest.raises(TransitionError):
        item.advance(to)


def test_new_attempt_increments_and_clears_the_job() -> None:
    """Going back to pending is a new attempt: the counter goes up, the old job is forgotten."""
    item = Item(row=make_row(), phase=Phase.RECONCILING, job_id="j1", unknown_since=5.0)
    again = item.new_attempt("proven absent")
    assert (again.phase, again.attempt, again.job_id, again.unknown_since) == (
        Phase.PENDING,
        2,
        None,
        None,
    )


def test_succeeded_item_is_never_retried() -> None:
    """A succeeded item cannot start a new attempt (that would be a duplicate copy)."""
    with pytest.raises(TransitionError):
        Item(row=make_row(), phase=Phase.SUCCEEDED).new_attempt("again")


def test_holding_phases_are_running_publicly() -> None:
    """Every phase that may have a copy in the cloud holds a slot and reads as running."""
    holding = {p for p in Phase if p.holds_slot}
    assert holding == {Phase.SUBMITTING, Phase.RECONCILING, Phase.RUNNING, Phase.ADOPTED}
    assert {p.public for p in holding} == {"running"}


def test_token_is_stable_and_per_item() -> None:
    """The description token depends only on the item key."""
    assert item_token("a/b/c") == item_token("a/b/c")
    assert item_token("a/b/c") != item_token("a/b/d")
    assert len(item_token("a/b/c")) == len("ims-migrate:") + 16


@pytest.mark.parametrize("tag", ["", "#line9"])
def test_a_rows_key_and_token_are_its_own_however_it_was_made(tag: str) -> None:
    """``key`` and ``token`` are made once per row and kept: a row made from another
    (``replace``) or read from the checkpoint has those of its own fields, never the other's."""
    first = make_row("img-1")
    assert (first.key, first.token) == ("default/img-1/cn-east-3", item_token(first.key))
    other = replace(first, image_id="img-2", line_tag=tag)
    assert other.key == f"default/img-2/cn-east-3{tag}"
    assert other.token == item_token(other.key) != first.token
    read = item_from_dict(json.loads(json.dumps(item_to_dict(Item(row=other)))))
    assert (read.key, read.token, read.row.token) == (other.key, other.token, other.token)
    assert Item(row=first).token == first.token


def test_merge_keeps_state_and_adds_new_rows() -> None:
    """A resumed list keeps the checkpoint's states; new rows join as pending."""
    old = Item(row=make_row("a"), phase=Phase.RUNNING, job_id="j")
    merged = {i.key: i for i in merge_list({old.key: old}, [make_row("a"), make_row("b", 3)])}
    assert merged[old.key].phase == Phase.RUNNING
    assert merged[make_row("b").key].phase == Phase.PENDING


def test_merge_keeps_removed_rows_as_not_listed() -> None:
    """A row removed from the list is still tracked, marked not listed."""
    old = Item(row=make_row("a"), phase=Phase.RUNNING, job_id="j")
    merged = merge_list({old.key: old}, [])
    assert len(merged) == 1
    assert merged[0].listed is False
    assert not is_finished(merged)  # its copy is still followed


def test_merge_rejudges_an_edited_rejected_row() -> None:
    """Editing a rejected row gives it a new attempt."""
    old = Item(row=make_row("a", description="bad<"), phase=Phase.REJECTED)
    merged = merge_list({old.key: old}, [make_row("a", description="good")])
    assert (merged[0].phase, merged[0].attempt) == (Phase.PENDING, 2)


def test_public_state_of_each_phase() -> None:
    """Phases that may hold a copy, or whose steps after the copy are left, are running; the
    others are their own public state."""
    public = {phase: phase.public for phase in Phase}
    assert {phase for phase, state in public.items() if state is PublicState.RUNNING} == {
        phase for phase in Phase if phase.holds_slot or phase.is_after_copy
    }
    assert public[Phase.PENDING] is PublicState.PENDING
    assert {public[p] for p in Phase if p.is_terminal} == {
        PublicState.SUCCEEDED,
        PublicState.FAILED,
        PublicState.REJECTED,
    }


def test_steps_after_the_copy_hold_no_slot_and_never_copy_again() -> None:
    """Verifying and carrying hold no copy slot, lead only to succeeded (or failed when the
    copy turns out broken), and a copied item never gets a new attempt."""
    after = {p for p in Phase if p.is_after_copy}
    assert after == {Phase.VERIFYING, Phase.CARRYING}
    assert not any(p.holds_slot for p in after)
    assert FORWARD_WITHIN_ATTEMPT[Phase.CARRYING] == {Phase.SUCCEEDED}
    assert FORWARD_WITHIN_ATTEMPT[Phase.VERIFYING] == {
        Phase.CARRYING,
        Phase.SUCCEEDED,
        Phase.FAILED,
    }
    for phase in after:
        with pytest.raises(TransitionError):
            Item(row=make_row(), phase=phase).new_attempt("again")


def test_with_changes_is_dataclasses_replace() -> None:
    """The fast copy of an item changes exactly the fields named, keeps every other one (each
    field set to a value unlike its default), and refuses a field Item does not have."""
    from dataclasses import fields

    base = Item(row=make_row(), phase=Phase.RUNNING, job_id="j1")
    values: dict[str, Any] = {}
    for at, f in enumerate(fields(Item)):
        if f.name == "row":
            values[f.name] = make_row("img-2", line=7)
        elif f.name == "phase":
            values[f.name] = Phase.VERIFYING
        elif f.name == "listed":
            values[f.name] = False
        elif f.type in ("int", "int | None"):
            values[f.name] = 100 + at
        elif f.type in ("float | None",):
            values[f.name] = 0.5 + at
        else:
            values[f.name] = f"value {at}"
    full = replace(base, **values)
    for name, value in values.items():
        fast = base.with_changes(**{name: value})
        slow = replace(base, **{name: value})
        assert type(fast) is Item
        assert fast == slow
        assert hash(fast) == hash(slow)
        assert getattr(fast, name) == value != getattr(base, name)
        assert full.with_changes(**{name: getattr(base, name)}) == replace(
            full, **{name: getattr(base, name)}
        )
    assert base.with_changes(**values) == full
    assert base.with_changes() == base
    assert base.with_changes() is not base
    with pytest.raises(TypeError):
        base.with_changes(no_such_field=1)
    with pytest.raises(AttributeError):  # still frozen
        base.with_changes(polls=3).polls = 4  # type: ignore[misc]
