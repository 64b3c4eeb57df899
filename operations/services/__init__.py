"""Writes and workflows of the operations core."""
