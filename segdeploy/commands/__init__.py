"""Every ``segdeploy`` command: each module parses its options and calls the Python API (``app`` is the root
command; ``options`` the option types several commands share)."""
