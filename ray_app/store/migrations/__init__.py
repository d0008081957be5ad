"""Alembic migrations of the job database (env.py, versions/); run by ray_app/store/migrate.py.

A package (with versions/ one too) so that setuptools ships the folder with ray_app."""
