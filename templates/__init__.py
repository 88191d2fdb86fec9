"""Message templates (Jinja2), one folder per locale; strings.toml holds the per-locale phrases."""
