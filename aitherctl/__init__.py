"""aitherctl: the control plane of a workstation's local AI stack."""

__version__ = "0.1.0"
