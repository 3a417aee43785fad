"""The GPUs: what they hold now, and will a plan fit.

Model (pure): `model` (`GpuSnapshot`, `GpuInventory`), `nvidia_smi` (its CSV queries and their
parser), `vram` (the VRAM planner). I/O: `nvml` (this machine, through NVML), `remote`
(`nvidia-smi` on another Docker host)."""
