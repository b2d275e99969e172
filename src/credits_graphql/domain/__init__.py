"""Pure rules: money, ledger, auto-recharge, access. No I/O."""
