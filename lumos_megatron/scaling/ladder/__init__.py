"""A scaling ladder and its runs (docs/scaling_ladders.md).

* ``shapes``: the model family, one shape per width;
* ``hparam_rule``: batch, learning rate and schedule from a run's compute;
* ``plan``: sizes x budgets → one derived, validated recipe per run;
* ``launch``: what a planned ladder becomes on disk (recipes, manifest, sbatch commands);
* ``collect``: a finished run directory → rows of the runs table the fit reads.
"""
