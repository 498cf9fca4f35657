"""Measures the served system: every model in the store and the ensemble the service serves, through the service's
own loader and preprocessing (``run``), with robustness sweeps (``corruptions``), results (``results``) and the
markdown report (``report``). Sits above training and the service; neither imports it."""
