"""api_keys.expires_at and api_keys.revoked_at: keys that expire, and keys an admin revoked.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 10:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('api_keys', sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('api_keys', sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:  # SQLite drops a column by rebuilding the table
        batch.drop_column('revoked_at')
        batch.drop_column('expires_at')
