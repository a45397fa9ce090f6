"""The dispatcher admin UI: the page and its static files (``page``), live KPIs from this process's
metrics (``kpis``), read-only fleet and request-log queries (``queries``) and the road network as
drawable polylines (``network``). The data and action endpoints live in ``routing_api.admin_api``."""
