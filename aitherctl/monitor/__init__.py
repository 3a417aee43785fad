"""The monitor: what the workstation is doing now, for the TUI, `status`, `ps` and `doctor`.

Model (pure): `model` (the `MonitorSnapshot` the TUI and `status` render). I/O: `scrape` (each
server's metrics), `procs` (which container a process belongs to), `cgroup_stats`, `stack_reader`,
`serve_status` (the monitor's client of `serve`), `unload`. Operations: `collect` (one snapshot),
`actions` (the monitor's keys), `other_hosts` (the other Docker hosts), `services` (what `ps`
shows), `doctor`."""
