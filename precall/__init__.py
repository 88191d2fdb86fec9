"""precall: pre-call notifications scheduled in PostgreSQL."""
