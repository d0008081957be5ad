"""Inference on Ray Serve: a multiplexed model server per trainer (DESIGN §10)."""
