"""The command line (Typer): thin commands that parse, call the core or ops, and render."""
