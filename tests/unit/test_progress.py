"""Progress reports (:mod:`iea.progress`) reach the installed listeners and never stop work."""

from __future__ import annotations

from iea import progress


def test_reports_reach_listeners_and_a_failing_listener_is_dropped():
    seen = []

    def broken(task, done, total):
        raise RuntimeError("listener bug")

    with progress.reporting(lambda *a: seen.append(a)), progress.reporting(broken):
        progress.report("train jmasa", 1, 10)  # the broken one raises: removed, no error
        progress.report("train jmasa", 2, 10)
    progress.report("train jmasa", 3, 10)  # nobody listens any more
    assert seen == [("train jmasa", 1, 10), ("train jmasa", 2, 10)]


def test_console_bars_count_and_restart_a_task(capsys):
    from flows.progress import ConsoleBars

    bars = ConsoleBars()
    try:
        bars("predict", 4, 10)
        bars("predict", 10, 10)
        bars("predict", 2, 10)  # the next evaluation: the bar starts again
        (task,) = bars.progress.tasks
        assert (task.description, task.completed, task.total) == ("predict", 2, 10)
    finally:
        bars.close()
