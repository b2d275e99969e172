"""The scaling settings: lease, pool sizes; a bad value stops start-up naming the variable."""

from __future__ import annotations

from datetime import timedelta

import pytest

from credits_graphql.settings import Settings, SettingsError


def test_the_lease_and_the_pool_default_to_60_seconds_and_16_connections() -> None:
    settings = Settings.from_env({})
    assert (settings.recharge_lease, settings.db_pool_size, settings.db_max_overflow) == (timedelta(seconds=60), 16, 0)
    assert Settings().db_pool_size == 16


def test_the_lease_and_the_pool_are_read_from_the_environment() -> None:
    settings = Settings.from_env({"CREDITS_RECHARGE_LEASE_SECONDS": "2", "CREDITS_DB_POOL_SIZE": "20",
                                  "CREDITS_DB_MAX_OVERFLOW": "3"})
    assert (settings.recharge_lease, settings.db_pool_size, settings.db_max_overflow) == (timedelta(seconds=2), 20, 3)


@pytest.mark.parametrize(("name", "value"), [("CREDITS_RECHARGE_LEASE_SECONDS", "0"),
                                             ("CREDITS_RECHARGE_LEASE_SECONDS", "1.5"),
                                             ("CREDITS_DB_POOL_SIZE", "0"), ("CREDITS_DB_POOL_SIZE", "-1"),
                                             ("CREDITS_DB_MAX_OVERFLOW", "many")])
def test_a_bad_lease_or_pool_size_stops_start_up_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_usage_transactions_default_to_the_database_s_and_are_read_from_the_environment() -> None:
    assert Settings.from_env({}).usage_transactions == 0  # by the database: 2 on PostgreSQL, 1 on SQLite
    assert Settings.from_env({"CREDITS_USAGE_TRANSACTIONS": "6", "CREDITS_DB_POOL_SIZE": "4",
                              "CREDITS_DB_MAX_OVERFLOW": "2"}).usage_transactions == 6


@pytest.mark.parametrize(("environment", "message"), [
    ({"CREDITS_USAGE_TRANSACTIONS": "0"}, "CREDITS_USAGE_TRANSACTIONS must be a whole number from 1"),
    ({"CREDITS_USAGE_TRANSACTIONS": "two"}, "CREDITS_USAGE_TRANSACTIONS must be a whole number from 1"),
    ({"CREDITS_USAGE_TRANSACTIONS": "17"}, r"CREDITS_USAGE_TRANSACTIONS \(17\) must not exceed .* \(16\)"),
    ({"CREDITS_USAGE_TRANSACTIONS": "5", "CREDITS_DB_POOL_SIZE": "4"}, r"must not exceed .* \(4\)"),
])
def test_bad_usage_transactions_stop_start_up_naming_the_variable(environment: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environment)
