"""Shared fixtures: a throwaway PostgreSQL server (see postgres_fixture.py)."""

from postgres_fixture import postgres_server, postgres_url  # noqa: F401
