"""The `vtp` command (also `python -m ray_app`)."""
