"""Settings from the environment: defaults, and a bad value stops start-up with a message naming the variable."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from credits_graphql.settings import DEFAULT_DATABASE_URL, Environment, Settings, SettingsError, WorkerMode


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite+aiosqlite:///./credits.db"
    assert settings.env is Environment.PROD
    assert not settings.is_dev
    assert settings.worker is WorkerMode.INLINE
    assert settings.policy.min_purchase == Decimal(10)
    assert settings.policy.max_purchase == Decimal(100000)
    assert settings.policy.retry_delays == (timedelta(seconds=60), timedelta(seconds=600))
    assert settings.graphiql is False
    assert settings.introspection is False
    assert settings.body_timeout_seconds == 30


def test_empty_values_count_as_unset() -> None:
    settings = Settings.from_env({"CREDITS_ENV": "", "CREDITS_WORKER": "", "CREDITS_MIN_PURCHASE": "",
                                  "CREDITS_MAX_PURCHASE": " ", "CREDITS_RECHARGE_RETRY_SECONDS": "",
                                  "CREDITS_GRAPHIQL": "", "CREDITS_DATABASE_URL": " "})
    assert settings == Settings.from_env({})


def test_every_setting_can_be_given() -> None:
    settings = Settings.from_env({
        "CREDITS_DATABASE_URL": "postgresql+asyncpg://app@db:5432/credits",
        "CREDITS_ENV": "dev",
        "CREDITS_WORKER": "external",
        "CREDITS_MIN_PURCHASE": "5",
        "CREDITS_MAX_PURCHASE": "500.50",
        "CREDITS_RECHARGE_RETRY_SECONDS": "1,2.5",
        "CREDITS_BODY_TIMEOUT_SECONDS": "5",
    })
    assert settings.database_url == "postgresql+asyncpg://app@db:5432/credits"
    assert settings.is_dev
    assert settings.worker is WorkerMode.EXTERNAL
    assert settings.policy.min_purchase == Decimal(5)
    assert settings.policy.max_purchase == Decimal("500.50")
    assert settings.policy.retry_delays == (timedelta(seconds=1), timedelta(seconds=2.5))
    assert settings.body_timeout_seconds == 5


def test_choices_ignore_case_and_surrounding_spaces() -> None:
    settings = Settings.from_env({"CREDITS_ENV": " DEV ", "CREDITS_WORKER": "External"})
    assert settings.env is Environment.DEV
    assert settings.worker is WorkerMode.EXTERNAL


def test_min_equal_to_max_is_allowed() -> None:
    policy = Settings.from_env({"CREDITS_MIN_PURCHASE": "50", "CREDITS_MAX_PURCHASE": "50.0"}).policy
    assert policy.min_purchase == policy.max_purchase == Decimal(50)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CREDITS_ENV", "staging"),
        ("CREDITS_ENV", "production"),
        ("CREDITS_WORKER", "x"),
        ("CREDITS_MIN_PURCHASE", "abc"),
        ("CREDITS_MIN_PURCHASE", "NaN"),
        ("CREDITS_MIN_PURCHASE", "-1"),
        ("CREDITS_MIN_PURCHASE", "0"),
        ("CREDITS_MIN_PURCHASE", "Infinity"),
        ("CREDITS_MAX_PURCHASE", "abc"),
        ("CREDITS_MAX_PURCHASE", "-5"),
        ("CREDITS_MAX_PURCHASE", "sNaN"),
        ("CREDITS_RECHARGE_RETRY_SECONDS", "60"),
        ("CREDITS_RECHARGE_RETRY_SECONDS", "60,600,900"),
        ("CREDITS_RECHARGE_RETRY_SECONDS", "a,b"),
        ("CREDITS_RECHARGE_RETRY_SECONDS", "-1,5"),
        ("CREDITS_RECHARGE_RETRY_SECONDS", "nan,5"),
        ("CREDITS_RECHARGE_RETRY_SECONDS", "60,inf"),
        ("CREDITS_RECHARGE_RETRY_SECONDS", "60,"),
        ("CREDITS_DATABASE_URL", "mysql://root@localhost/credits"),
        ("CREDITS_DATABASE_URL", "postgresql://app@db/credits"),
        ("CREDITS_DATABASE_URL", "sqlite:///./credits.db"),
        ("CREDITS_GRAPHIQL", "maybe"),
        ("CREDITS_INTROSPECTION", "2"),
        ("CREDITS_DATABASE_URL", "postgresql+asyncpg://app@db:notaport/credits"),
        ("CREDITS_DATABASE_URL", "sqlite+aiosqlite://"),
        ("CREDITS_DATABASE_URL", "sqlite+aiosqlite:///:memory:"),
        ("CREDITS_DATABASE_URL", "postgresql+asyncpg://app@db:99999/credits"),
        ("CREDITS_DATABASE_URL", "postgresql+asyncpg://app@db:0/credits"),
        ("CREDITS_DATABASE_URL", "postgresql+asyncpg://app@db/credits?sslmode=require"),
        ("CREDITS_DATABASE_URL", "postgresql+asyncpg://app@db/credits?connect_timeout=5"),
        ("CREDITS_DATABASE_URL", "sqlite+aiosqlite:////nonexistent/dir/credits.db"),
        ("CREDITS_DATABASE_URL", "sqlite+aiosqlite:////tmp"),
        ("CREDITS_DB_POOL_SIZE", "²"),
        ("CREDITS_DB_MAX_OVERFLOW", "٣"),
        ("CREDITS_SANDBOX_JOURNAL", "/nonexistent/dir/journal.db"),
        ("CREDITS_MAX_PURCHASE", "99999999999999999999999"),
        ("CREDITS_MAX_PURCHASE", "1000000000.000001"),
        ("CREDITS_BODY_TIMEOUT_SECONDS", "0"),
        ("CREDITS_BODY_TIMEOUT_SECONDS", "1.5"),
    ],
)
def test_a_bad_value_raises_an_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert variable in message
    assert "\n" not in message


def test_a_minimum_above_the_maximum_names_both_variables() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CREDITS_MIN_PURCHASE": "200", "CREDITS_MAX_PURCHASE": "100"})
    assert "CREDITS_MIN_PURCHASE" in str(caught.value)
    assert "CREDITS_MAX_PURCHASE" in str(caught.value)


def test_a_minimum_above_the_default_maximum_is_refused() -> None:
    with pytest.raises(SettingsError, match="CREDITS_MIN_PURCHASE"):
        Settings.from_env({"CREDITS_MIN_PURCHASE": "100001"})


def test_a_settings_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="CREDITS_WORKER"):
        Settings.from_env({"CREDITS_WORKER": "threads"})


def test_dev_turns_graphiql_and_introspection_on() -> None:
    settings = Settings.from_env({"CREDITS_ENV": "dev"})
    assert settings.graphiql is True
    assert settings.introspection is True


def test_dev_may_still_turn_graphiql_and_introspection_off() -> None:
    settings = Settings.from_env({"CREDITS_ENV": "dev", "CREDITS_GRAPHIQL": "false", "CREDITS_INTROSPECTION": "0"})
    assert settings.graphiql is False
    assert settings.introspection is False


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "on"])
def test_prod_turns_graphiql_and_introspection_on_only_when_asked(value: str) -> None:
    graphiql = Settings.from_env({"CREDITS_ENV": "prod", "CREDITS_GRAPHIQL": value})
    assert graphiql.graphiql is True
    assert graphiql.introspection is False
    introspection = Settings.from_env({"CREDITS_ENV": "prod", "CREDITS_INTROSPECTION": value})
    assert introspection.introspection is True
    assert introspection.graphiql is False


def test_the_database_url_is_stripped_of_surrounding_spaces() -> None:
    url = "sqlite+aiosqlite:////tmp/x.db"
    assert Settings.from_env({"CREDITS_DATABASE_URL": f"  {url} "}).database_url == url


def test_sslmode_is_refused_with_a_hint_to_use_asyncpgs_ssl() -> None:
    with pytest.raises(SettingsError, match="ssl=require"):
        Settings.from_env({"CREDITS_DATABASE_URL": "postgresql+asyncpg://app@db/credits?sslmode=require"})


def test_the_query_parameters_asyncpg_takes_are_accepted() -> None:
    url = ("postgresql+asyncpg://app@/credits?ssl=verify-full&command_timeout=10"
           "&prepared_statement_cache_size=0&host=db2:5433&host=db3:5434&target_session_attrs=read-write")
    assert Settings.from_env({"CREDITS_DATABASE_URL": url}).database_url == url


def test_a_sqlite_file_in_the_working_directory_or_as_a_uri_is_accepted() -> None:
    for url in ("sqlite+aiosqlite:///credits.db", "sqlite+aiosqlite:///file:credits.db?uri=true"):
        assert Settings.from_env({"CREDITS_DATABASE_URL": url}).database_url == url


def test_the_access_log_is_on_in_dev_off_in_prod_unless_asked() -> None:
    assert Settings.from_env({"CREDITS_ENV": "dev"}).access_log is True
    assert Settings.from_env({}).access_log is False
    assert Settings.from_env({"CREDITS_ACCESS_LOG": "true"}).access_log is True
    with pytest.raises(SettingsError, match="CREDITS_ACCESS_LOG"):
        Settings.from_env({"CREDITS_ACCESS_LOG": "sometimes"})


def test_the_largest_purchase_bound_is_a_billion_units() -> None:
    policy = Settings.from_env({"CREDITS_MIN_PURCHASE": "1000000000", "CREDITS_MAX_PURCHASE": "1000000000"}).policy
    assert policy.max_purchase == Decimal(1_000_000_000)
