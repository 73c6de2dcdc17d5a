"""The topotrace command line and the embedded default run."""
