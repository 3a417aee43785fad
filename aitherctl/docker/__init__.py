"""The one Docker seam: everything that talks to a Docker engine.

Model (pure): `stack` (aitherctl's containers as read back from their labels). I/O: `engine`
(`DockerEngine`: the SDK for tcp, ssh and contexts, `socket_api` for a local engine), `listing`
(the light reader of what runs, without the SDK), `ssh_transport` (Docker over the system `ssh`).
Raw `docker.errors` never leave this package."""
