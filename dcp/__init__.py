"""dcp: privacy-preserving data collaboration (usable but invisible, controllable and measurable)."""

__version__ = "0.1.0"
