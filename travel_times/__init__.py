"""Travel times learned from real trips and driver pings: the orchestration between the road
graph (``graph_store``: snapping, paths, the traffic layer) and the model (``gnn_model.eta``)."""
