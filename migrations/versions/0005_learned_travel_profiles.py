"""learned travel-time profiles: ONNX model per map and version, its evaluation, the active one

Revision ID: 0005_learned_travel_profiles
Revises: 0004_edge_controls
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_learned_travel_profiles"
down_revision = "0004_edge_controls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "learned_travel_profiles",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("map_version_id", sa.Integer, sa.ForeignKey("map_versions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("onnx_model", sa.LargeBinary, nullable=False),
        sa.Column("metrics_json", sa.Text, nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("map_version_id", "version", name="uq_learned_travel_profiles_version"),
    )
    op.create_index("ix_learned_travel_profiles_map", "learned_travel_profiles", ["map_version_id", "is_active"])


def downgrade() -> None:
    op.drop_index("ix_learned_travel_profiles_map", table_name="learned_travel_profiles")
    op.drop_table("learned_travel_profiles")
