"""The randomized stress harness (tests/stress.py), short and long.

Each run happens in a child process, so a crash or a hang fails the test with
the seed and the command that reproduces it. Operations broken by a known bug
are left out (``stress.KNOWN_BUGS``).
"""

from __future__ import annotations

import os
import random

import pytest
import stress

SHORT_SECONDS = 2.0
SHORT_WAIT = 10.0  # a single wait that takes longer is a hang
LONG_SECONDS = float(os.environ.get("SUBISO_STRESS_SECONDS", "180"))

# Two fixed seeds, and one new every run (printed, and named in the failure).
SHORT_SEEDS = [1, 2, random.SystemRandom().randrange(2**32)]


def _check(outcome: stress.Outcome) -> None:
    print(outcome.output)
    print(outcome.report())
    assert outcome.ok, f"{outcome.report()}\n\n{outcome.output[-20_000:]}"


@pytest.mark.timeout(SHORT_SECONDS + stress.margin(SHORT_WAIT) + 60)
@pytest.mark.parametrize("seed", SHORT_SEEDS)
def test_stress_short(seed):
    _check(stress.run_child(seed, SHORT_SECONDS, threads=6, wait=SHORT_WAIT))


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(LONG_SECONDS + stress.margin(stress.WAIT) + 60)
def test_stress_long():
    seed = random.SystemRandom().randrange(2**32)
    print(f"stress seed {seed}")
    _check(stress.run_child(seed, LONG_SECONDS))
