"""The database refuses to change or remove a ledger entry, as it does an audit event

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 17:00:00

Only triggers, and no release ever updated or deleted an entry: older code runs on this schema unchanged, so it may
be applied while the older release runs.
"""

from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_APPEND_ONLY = "ledger entries are append-only"


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(f"""CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '{_APPEND_ONLY}'; END $$""")
        op.execute("""CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
            FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()""")
    else:
        for event in ('UPDATE', 'DELETE'):
            op.execute(f"""CREATE TRIGGER ledger_entries_no_{event.lower()} BEFORE {event} ON ledger_entries
                BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END""")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_append_only ON ledger_entries")
        op.execute("DROP FUNCTION IF EXISTS ledger_entries_append_only()")
    else:
        for event in ('UPDATE', 'DELETE'):
            op.execute(f"DROP TRIGGER IF EXISTS ledger_entries_no_{event.lower()}")
