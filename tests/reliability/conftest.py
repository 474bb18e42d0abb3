"""The reliability suite: faults injected on purpose. Each test adds what it did to ``tally``,
and the counts are printed at the end of the run."""

from collections import Counter

import pytest
from hypothesis import settings

# The default profile tries the same 500 command lines on every run, so a red CI is always a real
# regression; `pytest tests/reliability --hypothesis-profile=explore` searches 5,000 new ones.
settings.register_profile("ci", max_examples=500, derandomize=True)
settings.register_profile("explore", max_examples=5000)
settings.load_profile("ci")

TALLY: Counter = Counter()
KINDS = ("faults injected", "runs resumed", "bad inputs tried", "config strings tried")


@pytest.fixture
def tally() -> Counter:
    return TALLY


def pytest_terminal_summary(terminalreporter):
    if TALLY:
        terminalreporter.write_sep("-", "reliability suite")
        terminalreporter.write_line(", ".join(f"{kind}: {TALLY[kind]}" for kind in KINDS))
