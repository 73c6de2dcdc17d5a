"""Recording: forward hooks, probe passes, schedules and the HDF5 store.

Importing this package does not import torch, so that ``analysis`` can read stores through
:mod:`topotrace.instrument.store` without it; the torch-facing pieces live in their own modules.
"""
