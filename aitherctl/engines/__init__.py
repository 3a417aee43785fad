"""Engines: one driver per engine (`vllm`, `ollama`, `llamacpp`, `comfyui`, `generic`), all pure.

`registry` looks a driver up by the profile's `engine:` value and builds a service's container;
`base` is the driver contract, `container` the `ContainerSpec` and labels every driver produces,
`metrics` what a server says about its load. Empty on purpose: importing `engines.container` (the
Docker readers do, on `ps`) loads no driver and none of their parsers."""
