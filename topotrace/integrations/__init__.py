"""Callbacks for training frameworks: thin adapters that translate a framework's events into the Recorder's API.

* :mod:`topotrace.integrations.lightning`: PyTorch Lightning (``pip install topotrace[lightning]``);
* :mod:`topotrace.integrations.hf`: the Hugging Face ``Trainer`` (``pip install topotrace[hf]``).

Each records the same bytes as a plain loop calling :meth:`topotrace.Recorder.step` once per optimiser update.
"""
