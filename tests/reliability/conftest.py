"""The reliability suite: faults injected on purpose. Each test adds what it did to ``tally``,
and the counts are printed at the end of the run."""

from collections import Counter

import pytest

TALLY: Counter = Counter()
KINDS = ("faults injected", "runs resumed", "bad inputs tried", "config strings tried")


@pytest.fixture
def tally() -> Counter:
    return TALLY


def pytest_terminal_summary(terminalreporter):
    if TALLY:
        terminalreporter.write_sep("-", "reliability suite")
        terminalreporter.write_line(", ".join(f"{kind}: {TALLY[kind]}" for kind in KINDS))
