"""The precall dispatcher and the database tooling it stands on."""
