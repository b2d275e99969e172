"""Registers the domain's enums with Strawberry under the contract's names.

Fields are annotated with the domain classes themselves; importing this module names them."""

from __future__ import annotations

import strawberry

from credits_graphql.domain import errors, ledger, recharge

strawberry.enum(ledger.CreditService, description="The services that consume communication credits.")
strawberry.enum(ledger.EntryKind, name="TransactionKind")
strawberry.enum(ledger.AccountStatus)
strawberry.enum(recharge.RechargeStatus)
strawberry.enum(recharge.AttemptStatus, name="RechargeAttemptStatus")
strawberry.enum(errors.ErrorCode, name="UserErrorCode")
