"""Shared settings of the Python suite.

FNA_LONG_TESTS=1 makes the random sweeps long; FNA_TEST_SEED sets their base seed (a failing case
prints its parameters and seed, so it can be replayed alone).
"""

import os

LONG = os.environ.get("FNA_LONG_TESTS", "0") not in ("", "0")
BASE_SEED = int(os.environ.get("FNA_TEST_SEED", "20261124"))
