"""Simulated driver apps and historical traffic replay: clients of the routing API over HTTP.

Imports only ``routing_core`` of this project; everything else goes through the HTTP API. One
exception: the edge fallback (``edge.py``) also imports ``gnn_model``, the on-device model and search.
"""
