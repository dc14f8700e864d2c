"""The HTML report of an index: tuning trade-off, evaluation, rejects, workspace history,
an embedding map and sample queries, in one self-contained page (see page.py)."""
