"""Table-driven tests of the pure task and job state transitions."""

from __future__ import annotations

import pytest

from iris.cluster.controller.transitions import (
    DEFAULT_MAX_PREEMPTIONS,
    TaskOutcome,
    derive_job_state,
    job_exit_code,
    task_after_attempt,
)
from iris.cluster.types import JobState, TaskState

T = TaskState
J = JobState


@pytest.mark.parametrize(
    ("attempt", "failures", "preemptions", "max_retries", "max_preemptions", "expected"),
    [
        # success never retries and spends nothing
        (T.SUCCEEDED, 0, 0, 0, 5, TaskOutcome(T.SUCCEEDED, 0, 0, retry=False)),
        (T.SUCCEEDED, 2, 3, 5, 5, TaskOutcome(T.SUCCEEDED, 2, 3, retry=False)),
        # a failure spends the failure budget
        (T.FAILED, 0, 0, 0, 5, TaskOutcome(T.FAILED, 1, 0, retry=False)),
        (T.FAILED, 0, 0, 1, 5, TaskOutcome(T.PENDING, 1, 0, retry=True)),
        (T.FAILED, 1, 0, 2, 5, TaskOutcome(T.PENDING, 2, 0, retry=True)),
        (T.FAILED, 2, 0, 2, 5, TaskOutcome(T.FAILED, 3, 0, retry=False)),
        # preemptions do not count against the failure budget
        (T.FAILED, 0, 4, 1, 5, TaskOutcome(T.PENDING, 1, 4, retry=True)),
        # losing the worker or being preempted spends the preemption budget only
        (T.PREEMPTED, 0, 0, 0, 5, TaskOutcome(T.PENDING, 0, 1, retry=True)),
        (T.WORKER_FAILED, 0, 0, 0, 5, TaskOutcome(T.PENDING, 0, 1, retry=True)),
        (T.PREEMPTED, 3, 4, 0, 5, TaskOutcome(T.PENDING, 3, 5, retry=True)),
        (T.PREEMPTED, 0, 5, 0, 5, TaskOutcome(T.PREEMPTED, 0, 6, retry=False)),
        (T.WORKER_FAILED, 0, 5, 9, 5, TaskOutcome(T.WORKER_FAILED, 0, 6, retry=False)),
        (T.PREEMPTED, 0, 0, 0, 0, TaskOutcome(T.PREEMPTED, 0, 1, retry=False)),
        # a killed or unschedulable attempt ends the task as it is
        (T.KILLED, 1, 1, 5, 5, TaskOutcome(T.KILLED, 1, 1, retry=False)),
        (T.UNSCHEDULABLE, 0, 0, 5, 5, TaskOutcome(T.UNSCHEDULABLE, 0, 0, retry=False)),
    ],
)
def test_task_after_attempt_table_spends_the_right_budget(
    attempt: TaskState, failures: int, preemptions: int, max_retries: int, max_preemptions: int, expected: TaskOutcome
) -> None:
    outcome = task_after_attempt(
        attempt, failures=failures, preemptions=preemptions, max_retries=max_retries, max_preemptions=max_preemptions
    )
    assert outcome == expected


def test_task_after_attempt_default_preemption_budget_is_generous() -> None:
    outcome = task_after_attempt(T.PREEMPTED, failures=0, preemptions=DEFAULT_MAX_PREEMPTIONS - 1, max_retries=0)
    assert outcome.retry
    exhausted = task_after_attempt(T.PREEMPTED, failures=0, preemptions=DEFAULT_MAX_PREEMPTIONS, max_retries=0)
    assert not exhausted.retry
    assert DEFAULT_MAX_PREEMPTIONS >= 10


@pytest.mark.parametrize("state", [s for s in TaskState if not s.is_terminal])
def test_task_after_attempt_non_terminal_state_raises_naming_it(state: TaskState) -> None:
    with pytest.raises(ValueError, match=state.value):
        task_after_attempt(state, failures=0, preemptions=0, max_retries=3)


@pytest.mark.parametrize(
    ("tasks", "killed", "expected"),
    [
        ([], False, J.PENDING),
        ([], True, J.KILLED),
        ([T.PENDING, T.PENDING], False, J.PENDING),
        ([T.PENDING, T.ASSIGNED], False, J.RUNNING),
        ([T.PENDING, T.BUILDING], False, J.RUNNING),
        ([T.RUNNING, T.RUNNING], False, J.RUNNING),
        ([T.SUCCEEDED, T.PENDING], False, J.RUNNING),
        ([T.SUCCEEDED, T.SUCCEEDED], False, J.SUCCEEDED),
        ([T.SUCCEEDED, T.FAILED], False, J.FAILED),
        ([T.RUNNING, T.FAILED], False, J.FAILED),
        ([T.RUNNING, T.WORKER_FAILED], False, J.WORKER_FAILED),
        ([T.SUCCEEDED, T.PREEMPTED], False, J.WORKER_FAILED),
        ([T.PENDING, T.UNSCHEDULABLE], False, J.UNSCHEDULABLE),
        ([T.RUNNING, T.KILLED], False, J.KILLED),
        # failure outranks the other terminal outcomes
        ([T.KILLED, T.UNSCHEDULABLE, T.WORKER_FAILED, T.FAILED], False, J.FAILED),
        ([T.KILLED, T.WORKER_FAILED], False, J.WORKER_FAILED),
        # a kill request wins over everything
        ([T.SUCCEEDED, T.SUCCEEDED], True, J.KILLED),
        ([T.FAILED], True, J.KILLED),
    ],
)
def test_derive_job_state_table(tasks: list[TaskState], killed: bool, expected: JobState) -> None:
    assert derive_job_state(tasks, killed=killed) is expected


def test_derive_job_state_accepts_a_generator() -> None:
    assert derive_job_state(s for s in [T.SUCCEEDED, T.SUCCEEDED]) is J.SUCCEEDED


@pytest.mark.parametrize(
    ("job_state", "codes", "expected"),
    [
        (J.SUCCEEDED, [0, 0], 0),
        (J.SUCCEEDED, [], 0),
        (J.FAILED, [0, 3, 4], 3),
        (J.FAILED, [None, 137], 137),
        (J.FAILED, [0, None], 1),
        (J.FAILED, [], 1),
        (J.KILLED, [None], 1),
        (J.WORKER_FAILED, [0], 1),
        (J.UNSCHEDULABLE, [], 1),
    ],
)
def test_job_exit_code_table(job_state: JobState, codes: list[int | None], expected: int) -> None:
    assert job_exit_code(job_state, codes) == expected


# --- the appliers and the legal-transition tables ------------------------------------------

import ast  # noqa: E402
from pathlib import Path  # noqa: E402

from iris.cluster.controller import transitions  # noqa: E402
from iris.cluster.controller.state import Changes, Job, JobSpec  # noqa: E402
from iris.cluster.controller.transitions import (  # noqa: E402
    ATTEMPT_TRANSITIONS,
    JOB_TRANSITIONS,
    TASK_TRANSITIONS,
    AttemptEnd,
    IllegalTransition,
)
from iris.cluster.types import Entrypoint  # noqa: E402

CONTROLLER = Path(transitions.__file__).parent


def make_job(replicas: int = 1, **fields: object) -> tuple[Job, Changes]:
    changes = Changes()
    job = Job("/j", JobSpec(name="j", entrypoint=Entrypoint.from_command("true"), replicas=replicas, **fields), 0.0)
    transitions.new_job(job, 0.0, changes)
    return job, changes


def test_transition_tables_cover_every_state_and_terminal_states_are_final() -> None:
    assert set(TASK_TRANSITIONS) == set(TaskState)
    assert set(JOB_TRANSITIONS) == set(JobState)
    assert set(ATTEMPT_TRANSITIONS) == set(TaskState) - {T.PENDING, T.UNSCHEDULABLE}
    for table in (TASK_TRANSITIONS, ATTEMPT_TRANSITIONS, JOB_TRANSITIONS):
        for state, moves in table.items():
            assert not (state.is_terminal and moves), f"{state} is terminal but may move to {moves}"


def test_transitions_only_transitions_module_writes_state() -> None:
    """No other controller module assigns a job's, task's or attempt's ``state``."""
    writers = []
    for path in CONTROLLER.glob("*.py"):
        if path.name == "transitions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "state":
                    writers.append(f"{path.name}:{node.lineno}")
    assert not writers, f"state written outside transitions.py at {writers}"


def test_transitions_lifecycle_success_counts_and_job_state() -> None:
    job, changes = make_job()
    task = job.tasks[0]
    attempt = transitions.assign(job, task, "w0", changes)
    assert (task.state, attempt.state, job.task_counts[T.ASSIGNED]) == (T.ASSIGNED, T.ASSIGNED, 1)
    assert transitions.update_job(job, 1.0, changes) is None and job.state is J.RUNNING and job.started_at == 1.0
    assert transitions.observe(job, task, attempt, T.RUNNING, 2.0, changes)
    assert not transitions.observe(job, task, attempt, T.BUILDING, 2.5, changes)  # never back from RUNNING
    verdict = transitions.end_attempt(job, task, attempt, AttemptEnd(T.SUCCEEDED, 0), 3.0, changes)
    assert not verdict.retry and task.state is T.SUCCEEDED
    assert transitions.update_job(job, 3.0, changes) is J.SUCCEEDED
    assert job.finished_at == 3.0 and job.task_counts == {T.PENDING: 0, T.ASSIGNED: 0, T.RUNNING: 0, T.SUCCEEDED: 1}
    assert task in changes.tasks and job in changes.jobs and "/j" in changes.keys


def test_transitions_failure_retries_then_fails_job_with_task_error() -> None:
    job, changes = make_job(max_retries=1)
    task = job.tasks[0]
    first = transitions.assign(job, task, "w0", changes)
    verdict = transitions.end_attempt(job, task, first, AttemptEnd(T.FAILED, 3, "boom"), 1.0, changes)
    assert verdict.retry and task.state is T.PENDING and task.failures == 1
    second = transitions.assign(job, task, "w1", changes)
    transitions.end_attempt(job, task, second, AttemptEnd(T.FAILED, 3, "boom"), 2.0, changes)
    assert task.state is T.FAILED and transitions.update_job(job, 2.0, changes) is J.FAILED
    assert job.error == "task 0: boom"


def test_transitions_gang_member_retry_asks_for_gang_restart() -> None:
    job, changes = make_job(replicas=2, coschedule_by="slice", max_retries=1)
    a = transitions.assign(job, job.tasks[0], "w0", changes)
    transitions.assign(job, job.tasks[1], "w1", changes)
    verdict = transitions.end_attempt(job, job.tasks[0], a, AttemptEnd(T.FAILED, 1), 1.0, changes)
    assert verdict.retry and verdict.gang_restart


def test_transitions_kill_stops_the_running_attempt_and_late_end_changes_nothing() -> None:
    job, changes = make_job()
    task = job.tasks[0]
    attempt = transitions.assign(job, task, "w0", changes)
    transitions.kill_job(job, "killed by user", False, changes)
    assert transitions.stop_task(job, task, T.KILLED, "killed by user", changes) is attempt and attempt.stop_requested
    assert transitions.update_job(job, 1.0, changes) is J.KILLED
    verdict = transitions.end_attempt(job, task, attempt, AttemptEnd(T.SUCCEEDED, 0), 2.0, changes)
    assert not verdict.retry and task.state is T.KILLED and attempt.state is T.SUCCEEDED


@pytest.mark.parametrize(
    ("move", "message"),
    [
        (lambda job, task, ch: transitions.stop_task(job, task, T.SUCCEEDED, "x", ch), "PENDING -> SUCCEEDED"),
        (lambda job, task, ch: transitions.requeue(job, task, "x", 0.0, ch) or transitions.assign(job, task, "w", ch)
         and transitions.stop_task(job, task, T.UNSCHEDULABLE, "x", ch), "ASSIGNED -> UNSCHEDULABLE"),
    ],
)
def test_transitions_illegal_move_raises_naming_it(move, message: str) -> None:  # type: ignore[no-untyped-def]
    job, changes = make_job()
    with pytest.raises(IllegalTransition, match=message):
        move(job, job.tasks[0], changes)


def test_transitions_ended_task_cannot_be_requeued() -> None:
    job, changes = make_job()
    task = job.tasks[0]
    transitions.stop_task(job, task, T.KILLED, "x", changes)
    with pytest.raises(IllegalTransition, match="KILLED -> PENDING"):
        transitions.requeue(job, task, "again", 1.0, changes)
