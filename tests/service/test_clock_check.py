"""The worker checks this host's clock against the database server's, and warns when they disagree by seconds."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

import pytest

from credits_graphql.app import build_app
from credits_graphql.bootstrap import Runtime
from credits_graphql.service import clock_check
from credits_graphql.service.deps import Deps, utc_now
from credits_graphql.service.worker import RechargeWorker
from tests.conftest import Clock

WARNING = "clock is"


def _skewed(deps: Deps, skew: timedelta) -> Deps:
    return replace(deps, clock=lambda: utc_now() + skew)


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="credits_graphql.service.clock_check")
    return caplog


@pytest.mark.parametrize(("skew", "says"), [(timedelta(minutes=2), "120.0 s ahead of"),
                                            (timedelta(seconds=-30), "30.0 s behind")])
async def test_a_host_clock_seconds_off_the_database_server_is_warned_about(
        deps: Deps, database_url: str, warnings: pytest.LogCaptureFixture, skew: timedelta, says: str) -> None:
    measured = await clock_check.warn_on_clock_skew(_skewed(deps, skew))
    if database_url.startswith("sqlite"):  # the database runs in this process, on this host's clock
        assert (measured, warnings.text) == (None, "")
        return
    assert measured is not None
    assert abs(measured - skew) < timedelta(seconds=1)  # PostgreSQL runs on this machine: its clock is this one
    assert f"this host's clock is {says} the database server's" in warnings.text
    assert "NTP" in warnings.text


async def test_a_host_clock_in_step_with_the_database_server_is_not_warned_about(
        deps: Deps, database_url: str, warnings: pytest.LogCaptureFixture) -> None:
    measured = await clock_check.warn_on_clock_skew(_skewed(deps, timedelta(0)))
    assert (measured is None) == database_url.startswith("sqlite")
    assert measured is None or abs(measured) < clock_check.MAX_SKEW
    assert WARNING not in warnings.text


async def test_the_worker_checks_its_clock_on_its_first_pass_and_then_every_few_minutes(
        deps: Deps, database_url: str, clock: Clock, warnings: pytest.LogCaptureFixture) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("the database runs in this process, on this host's clock: nothing to compare")
    clock.advance(hours=1)  # the test's clock, an hour ahead of the machine's
    worker = RechargeWorker(deps, poll_seconds=3600)
    await worker.run_once()
    assert warnings.text.count(WARNING) == 1
    await worker.run_once()
    assert warnings.text.count(WARNING) == 1  # not due yet
    clock.advance(minutes=5)
    await worker.run_once()
    assert warnings.text.count(WARNING) == 2


async def test_a_server_without_a_worker_checks_its_clock_when_it_starts(
        runtime: Runtime, database_url: str, warnings: pytest.LogCaptureFixture) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("the database runs in this process, on this host's clock: nothing to compare")
    skewed = replace(runtime, deps=_skewed(runtime.deps, timedelta(minutes=3)))
    app = build_app(skewed, run_worker=False)  # serve with CREDITS_WORKER=external
    async with app.router.lifespan_context(app):
        assert "this host's clock is" in warnings.text
        assert "ahead of the database server's" in warnings.text
