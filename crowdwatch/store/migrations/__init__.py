"""Alembic migrations of the workflow store."""
