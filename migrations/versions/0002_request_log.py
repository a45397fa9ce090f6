"""request log and driver positions

Revision ID: 0002_request_log
Revises: 0001_road_graph
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_request_log"
down_revision = "0001_road_graph"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "route_requests",
        sa.Column("route_id", sa.String(36), primary_key=True),
        sa.Column("driver_id", sa.String(128), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_json", sa.Text, nullable=False),
        sa.Column("response_json", sa.Text, nullable=True),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("error_kind", sa.String(64), nullable=True),
        sa.Column("cache", sa.String(8), nullable=True),
        sa.Column("n_stops", sa.Integer, nullable=False),
        sa.Column("total_duration_s", sa.Float, nullable=True),
        sa.Column("timings_json", sa.Text, nullable=True),
        sa.Column("graph_version", sa.Integer, nullable=True),
        sa.Column("traffic_epoch", sa.Integer, nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("backend", sa.String(32), nullable=True),
    )
    op.create_index("ix_route_requests_driver", "route_requests", ["driver_id", "received_at"])
    op.create_index("ix_route_requests_received", "route_requests", ["received_at"])
    op.create_table(
        "driver_positions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("driver_id", sa.String(128), nullable=False),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("lon", sa.Float, nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("speed_mps", sa.Float, nullable=True),
        sa.Column("heading_deg", sa.Float, nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_driver_positions_driver_time", "driver_positions", ["driver_id", "timestamp"])


def downgrade() -> None:
    op.drop_index("ix_driver_positions_driver_time", table_name="driver_positions")
    op.drop_table("driver_positions")
    op.drop_index("ix_route_requests_received", table_name="route_requests")
    op.drop_index("ix_route_requests_driver", table_name="route_requests")
    op.drop_table("route_requests")
