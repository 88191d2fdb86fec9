"""precall's command line (typer)."""
