"""Offline analysis of a store: NAPs, layouts, maps and activity–confidence statistics (no torch)."""
