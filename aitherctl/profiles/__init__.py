"""Profiles: what a profile file declares and how it is read.

Model (pure): `profile` (the loaded objects), `scheduling_terms`, `ram_budget`, `redact`, and the
parsing in `loader` (`${VAR}` expansion, `extends`, checks, problems: text in, `Profile` out).
I/O: `catalog` (where the files live and reading them), `machine_ram` (this machine's memory)."""
