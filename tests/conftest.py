"""pytest only: run the tests from a temporary directory.

trial runs them in ``_trial_temp``; under pytest, ``TestCase.mktemp()``
paths (``tests.test_x/...``) would otherwise land in the checkout.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _workInTemporaryDirectory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(before)
