"""road graph store: map versions, nodes, edges, traffic profiles, live observations

Revision ID: 0001_road_graph
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_road_graph"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "map_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source_checksum", sa.String(64), nullable=False, unique=True),
        sa.Column("source_path", sa.Text, nullable=False),
        sa.Column("node_count", sa.Integer, nullable=False),
        sa.Column("edge_count", sa.Integer, nullable=False),
        sa.Column("min_lat", sa.Float, nullable=False),
        sa.Column("min_lon", sa.Float, nullable=False),
        sa.Column("max_lat", sa.Float, nullable=False),
        sa.Column("max_lon", sa.Float, nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("traffic_epoch", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "road_nodes",
        sa.Column("map_version_id", sa.Integer, sa.ForeignKey("map_versions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("node_index", sa.Integer, primary_key=True),
        sa.Column("osm_id", sa.BigInteger, nullable=False),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("lon", sa.Float, nullable=False),
    )
    op.create_table(
        "road_edges",
        sa.Column("map_version_id", sa.Integer, sa.ForeignKey("map_versions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("edge_index", sa.Integer, primary_key=True),
        sa.Column("source_node", sa.Integer, nullable=False),
        sa.Column("target_node", sa.Integer, nullable=False),
        sa.Column("osm_way_id", sa.BigInteger, nullable=False),
        sa.Column("length_m", sa.Float, nullable=False),
        sa.Column("speed_kph", sa.Float, nullable=False),
        sa.Column("road_class", sa.String(32), nullable=False),
        sa.Column("oneway", sa.Boolean, nullable=False),
        sa.Column("geometry", sa.Text, nullable=False),
    )
    op.create_table(
        "traffic_profiles",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("map_version_id", sa.Integer, sa.ForeignKey("map_versions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("road_class", sa.String(32), nullable=True),
        sa.Column("edge_index", sa.Integer, nullable=True),
        sa.Column("day_type", sa.String(8), nullable=False),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("speed_factor", sa.Float, nullable=False),
        sa.CheckConstraint("(road_class IS NULL) <> (edge_index IS NULL)", name="ck_traffic_profiles_target"),
        sa.CheckConstraint("bucket >= 0 AND bucket < 96", name="ck_traffic_profiles_bucket"),
    )
    op.create_index("ix_traffic_profiles_map", "traffic_profiles", ["map_version_id"])
    op.create_table(
        "live_traffic_observations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("map_version_id", sa.Integer, sa.ForeignKey("map_versions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("edge_index", sa.Integer, nullable=False),
        sa.Column("speed_kph", sa.Float, nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("traffic_epoch", sa.Integer, nullable=False),
    )
    op.create_index("ix_live_traffic_map_expiry", "live_traffic_observations", ["map_version_id", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_live_traffic_map_expiry", table_name="live_traffic_observations")
    op.drop_table("live_traffic_observations")
    op.drop_index("ix_traffic_profiles_map", table_name="traffic_profiles")
    op.drop_table("traffic_profiles")
    op.drop_table("road_edges")
    op.drop_table("road_nodes")
    op.drop_table("map_versions")
