"""I/O adapters: Docker, NVML, HTTP, the local host. Each turns its library's errors into
`aitherctl.errors` so nothing raw crosses into the CLI or the TUI."""
