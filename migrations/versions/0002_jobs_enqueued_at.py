"""jobs.enqueued_at: when a task message was last sent, so the sweeper can resend a lost one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 21:10:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:  # SQLite drops a column by rebuilding the table
        batch.drop_column('enqueued_at')
