"""Learned travel times: trip files, the line-graph GNN that predicts a speed factor per directed
edge and time bucket, its training on trip durations, baselines, and its ONNX export."""
