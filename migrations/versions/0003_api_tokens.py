"""api tokens (bearer tokens, stored hashed)

Revision ID: 0003_api_tokens
Revises: 0002_request_log
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_api_tokens"
down_revision = "0002_request_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("driver_id", sa.String(128), nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("rate_per_s", sa.Float, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('driver', 'dispatcher')", name="ck_api_tokens_role"),
        sa.CheckConstraint("role = 'dispatcher' OR driver_id IS NOT NULL", name="ck_api_tokens_driver_bound"),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
