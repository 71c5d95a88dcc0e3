"""Scaling-law fits of a runs table (docs/scaling.md).

* ``table``: reads and checks the runs CSV;
* ``objective``, ``lbfgs``, ``approach3``: Approach 3's parametric loss, its Huber objective, the
  batched L-BFGS and the grid fit;
* ``bootstrap``: run-level resampling and percentile intervals;
* ``approach2``: IsoFLOP profiles;
* ``allocation``: the compute-optimal split of a budget;
* ``plots``, ``report``, ``pipeline``: the figures, ``report.md`` and the whole fit written to a
  directory (``tools/scaling/fit.py``).
"""
