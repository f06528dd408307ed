"""geoflow: flow matching on geometric data."""

__version__ = "0.1.0"
