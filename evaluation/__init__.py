"""Measures the served system: every model in the store and the ensemble the service serves, through the service's
own loader and preprocessing (``run``), with robustness sweeps (``corruptions``), results (``results``) and the
markdown report (``report``); reading whole numbers against Tesseract and EasyOCR (``reading``, uploads rendered by
``line_images``). Sits above training and the service; neither imports it."""
