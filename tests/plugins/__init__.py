"""pytest plugins with precall's fixtures (registered by tests/conftest.py), as psycopg's tests do."""
