"""Alembic environment: migrates the database named by IDMIRROR_DATABASE_URL."""

from alembic import context
from sqlalchemy import create_engine, pool

from identity.db import sqlalchemy_url
from identity.settings import get_settings

url = context.config.get_main_option("sqlalchemy.url") or get_settings().require_database_url()
engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)

with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
