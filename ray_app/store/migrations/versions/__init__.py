"""Alembic revisions of the job database, oldest first: 0001_baseline, then 0002, 0003..."""
