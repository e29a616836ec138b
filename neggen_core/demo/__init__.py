"""The synthetic demo catalogue."""
