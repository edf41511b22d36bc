"""Test support shared by every suite: real Redis, real PostgreSQL, real server processes."""
