"""End-of-instant hooks (kernel/instant.py): a hook runs once every other event of its instant has run."""

from __future__ import annotations

from cluster_sim.kernel.instant import CountingEnvironment, InstantHooks


def _instant_with_a_hook():
    env = CountingEnvironment()
    hooks = InstantHooks(env)
    log: list[tuple[float, str]] = []

    def worker(name: str, zeros: int):
        if name == "a":
            hooks.request(20, lambda: log.append((env.now, "hook")))
        for i in range(zeros):  # each a new event of the same instant, scheduled after the hook's
            yield env.timeout(0)
            log.append((env.now, f"{name}{i}"))
        yield env.timeout(1)
        log.append((env.now, f"{name}-later"))

    env.process(worker("a", 3))
    env.process(worker("b", 2))
    env.run()
    return env, log


def test_a_hook_runs_after_every_event_of_its_instant_even_those_scheduled_after_it():
    _env, log = _instant_with_a_hook()
    assert log == [(0, "a0"), (0, "b0"), (0, "a1"), (0, "b1"), (0, "a2"), (0, "hook"),
                   (1, "b-later"), (1, "a-later")]


def test_a_hook_costs_one_step_not_one_per_wave_of_events_of_its_instant():
    env, _log = _instant_with_a_hook()
    # by hand: each process 1 start + its timeouts of 0 (3 and 2) + 1 timeout of 1 + 1 end: 6 + 5
    # = 11 steps; the hook 1 more; and the last call of step, which finds no event and ends the
    # run, counts too: 13. A timeout of 0 as deferrer came back after each of the three waves of
    # events at t=0: 3 more steps.
    assert env.steps == 13


def test_the_counting_environment_binds_simpys_event_factories_to_itself_as_simpy_does_for_its_own_class():
    import simpy

    env = CountingEnvironment()
    for name in ("timeout", "event", "process", "all_of", "any_of"):
        assert name in vars(env)  # bound once, not a new bound method at every call
        assert vars(env)[name].__self__ is env
    assert vars(simpy.Environment()).keys() >= {"timeout", "event", "process"}  # (what SimPy does itself)


def test_the_counting_step_fails_the_run_on_an_undefused_failure_and_stops_and_resumes_at_until():
    import pytest

    env = CountingEnvironment()
    stop = env.timeout(2)
    log: list[float] = []

    def ticker():
        while True:
            yield env.timeout(1)
            log.append(env.now)

    env.process(ticker())
    env.run(until=stop)  # (SimPy's StopSimulation branch: the stop event's other callbacks kept)
    assert env.now == 2 and log == [1]
    env.run(until=4)
    assert log == [1, 2, 3]
    env.event().fail(RuntimeError("disk gone"))
    with pytest.raises(RuntimeError, match="disk gone"):
        env.run()


def test_hooks_of_one_instant_run_lowest_priority_number_first_each_after_the_events_the_one_before_made():
    env = CountingEnvironment()
    hooks = InstantHooks(env)
    log: list[str] = []

    def first():
        log.append("first")
        env.process(_made(env, log))  # an event of the same instant, made by the first hook

    def proc():
        hooks.request(30, lambda: log.append("second"))
        hooks.request(10, first)
        yield env.timeout(0)
        log.append("proc")

    env.process(proc())
    env.run()
    assert log == ["proc", "first", "made", "second"]


def _made(env, log):
    log.append("made")
    yield env.timeout(0)
