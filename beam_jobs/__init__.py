"""Job entry points (python -m beam_jobs.NAME): parse flags, validate, wire the packages, report."""
