"""road edge travel-time features: traffic controls along the edge, lanes, maxspeed tagged

Revision ID: 0004_edge_controls
Revises: 0003_api_tokens
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_edge_controls"
down_revision = "0003_api_tokens"
branch_labels = None
depends_on = None

_COLUMNS = ("signals", "stops", "give_way", "crossings", "lanes", "maxspeed_tagged")


def upgrade() -> None:
    # Nullable: maps imported before this revision have no values (readers see zeros / unknown).
    with op.batch_alter_table("road_edges") as batch:
        batch.add_column(sa.Column("signals", sa.SmallInteger, nullable=True))
        batch.add_column(sa.Column("stops", sa.SmallInteger, nullable=True))
        batch.add_column(sa.Column("give_way", sa.SmallInteger, nullable=True))
        batch.add_column(sa.Column("crossings", sa.SmallInteger, nullable=True))
        batch.add_column(sa.Column("lanes", sa.Float, nullable=True))
        batch.add_column(sa.Column("maxspeed_tagged", sa.Boolean, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("road_edges") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
