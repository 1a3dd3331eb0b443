"""The `splitlog` command: run the system, one component, or inspect it."""
