"""taskmasterd: a process supervisor that belongs to systemd and D-Bus."""

__version__ = "0.1.0"
