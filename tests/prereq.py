"""Missing prerequisites: a loud skip on a developer's machine, a failure in
CI (CI=true), where every tier must run."""

import os

import pytest


def require(tier: str, missing: list[str]) -> None:
    if not missing:
        return
    msg = f"{tier.upper()} TIER NOT RUN, missing: " + "; ".join(missing)
    if os.environ.get("CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)
