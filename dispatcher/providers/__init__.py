"""Push and SMS providers behind one small interface (real SDKs in production, `log` for the demo)."""
