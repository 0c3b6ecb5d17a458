"""Alembic migrations of the idmirror database (`idmirror migrate`)."""
