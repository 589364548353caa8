"""How the CLI and the demos show things: rich tables and timelines over the rows services return."""
