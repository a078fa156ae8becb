"""The task state machine (conveyor.domain): ALLOWED is the only source of legal moves."""

from __future__ import annotations

import itertools
from collections import deque

import pytest
from conveyor.domain import (
    ALLOWED,
    NON_TERMINAL,
    TERMINAL,
    IllegalTransition,
    TaskState,
    check_transition,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

S = TaskState
STATES = list(TaskState)

# The state machine of DESIGN.md §1, written out independently of ALLOWED: (from, to).
EXPECTED_EDGES = {
    (S.PENDING, S.QUEUED),
    (S.QUEUED, S.RUNNING),
    (S.RUNNING, S.RUNNING),  # re-claim after the previous holder's lease expired
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.QUEUED),  # retryable failure, shutdown hand-back
    (S.DEAD, S.PENDING),  # operator redrive from the DLQ, through the outbox
    *((s, S.CANCELLED) for s in (S.PENDING, S.QUEUED, S.RUNNING)),
    *((s, S.DEAD) for s in (S.PENDING, S.QUEUED, S.RUNNING)),
    *((s, S.EXPIRED) for s in (S.PENDING, S.QUEUED)),  # never started by its start_by
}


def _legal(current: TaskState, target: TaskState) -> bool:
    try:
        check_transition("t", current, target)
    except IllegalTransition:
        return False
    return True


def _reachable(start: TaskState) -> set[TaskState]:
    seen, todo = {start}, deque([start])
    while todo:
        current = todo.popleft()
        for target in STATES:
            if target not in seen and _legal(current, target):
                seen.add(target)
                todo.append(target)
    return seen


def test_terminal_and_non_terminal_partition_the_states():
    assert set(STATES) == TERMINAL | NON_TERMINAL
    assert not TERMINAL & NON_TERMINAL
    assert {s for s in STATES if s.terminal} == {
        *(S.SUCCEEDED, S.FAILED, S.DEAD, S.CANCELLED, S.EXPIRED)
    }


def test_every_pair_is_legal_exactly_when_the_design_says_so():
    legal = {(a, b) for a, b in itertools.product(STATES, STATES) if _legal(a, b)}
    assert legal == EXPECTED_EDGES


def test_allowed_only_names_real_states_as_sources():
    for target, sources in ALLOWED.items():
        assert target in STATES
        assert sources <= set(STATES)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_have_no_exit_but_the_redrive(terminal: TaskState):
    exits = {target for target in STATES if _legal(terminal, target)}
    assert exits == ({S.PENDING} if terminal == S.DEAD else set())


@pytest.mark.parametrize("state", sorted(NON_TERMINAL))
def test_every_non_terminal_state_can_be_cancelled_or_dead_lettered_directly(state: TaskState):
    check_transition("t", state, S.CANCELLED)
    check_transition("t", state, S.DEAD)


def test_every_state_is_reachable_from_pending_and_only_a_redrive_leads_back_to_pending():
    assert _reachable(S.PENDING) == set(STATES)
    assert {s for s in STATES if _legal(s, S.PENDING)} == {S.DEAD}


def test_a_pending_task_must_pass_through_queued_before_running():
    with pytest.raises(IllegalTransition):
        check_transition("t", S.PENDING, S.RUNNING)
    with pytest.raises(IllegalTransition):
        check_transition("t", S.QUEUED, S.SUCCEEDED)


def test_illegal_transition_carries_task_and_states():
    with pytest.raises(IllegalTransition) as caught:
        check_transition("abc", S.SUCCEEDED, S.RUNNING)
    err = caught.value
    assert (err.task_id, err.current, err.target) == ("abc", S.SUCCEEDED, S.RUNNING)
    assert "abc" in str(err) and "SUCCEEDED -> RUNNING" in str(err)


@given(st.lists(st.sampled_from(STATES), max_size=40))
def test_any_sequence_of_attempts_moves_only_along_allowed_edges(targets: list[TaskState]):
    state = S.PENDING
    path = [state]
    for target in targets:
        accepted = _legal(state, target)
        assert accepted == (state in ALLOWED.get(target, frozenset()))
        if accepted:
            state = target
            path.append(state)
    for a, b in itertools.pairwise(path):
        assert (a, b) in EXPECTED_EDGES
    # Once SUCCEEDED, FAILED, CANCELLED or EXPIRED, the walk is over for good.
    for i, s in enumerate(path):
        if s in TERMINAL - {S.DEAD}:
            assert path[i:] == [s]


class TaskLifecycle(RuleBasedStateMachine):
    """Random operations on one task: the model only ever moves along ALLOWED."""

    @initialize()
    def submitted(self) -> None:
        self.state = S.PENDING
        self.redrives = 0
        self.finished: TaskState | None = None

    @rule(to=st.sampled_from(STATES))
    def attempt(self, to: TaskState) -> None:
        if self.state in ALLOWED.get(to, frozenset()):
            check_transition("t", self.state, to)
            if self.state == S.DEAD:
                assert to == S.PENDING
                self.redrives += 1
            self.state = to
        else:
            with pytest.raises(IllegalTransition):
                check_transition("t", self.state, to)
        if self.state in (S.SUCCEEDED, S.FAILED, S.CANCELLED, S.EXPIRED):
            self.finished = self.finished or self.state

    @invariant()
    def final_states_are_final(self) -> None:
        if self.finished is not None:
            assert self.state == self.finished

    @invariant()
    def cancel_and_dead_letter_stay_possible_until_terminal(self) -> None:
        if not self.state.terminal:
            assert _legal(self.state, S.CANCELLED)
            assert _legal(self.state, S.DEAD)


TestTaskLifecycle = TaskLifecycle.TestCase
TestTaskLifecycle.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
