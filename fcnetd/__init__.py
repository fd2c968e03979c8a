"""fcnetd: host networking for Firecracker microVMs."""

__version__ = "0.1.0"
