"""Root pytest configuration, shared by the unit tests and the notebook runs.

Notebook kernels started by nbval inherit this process's environment, so the
profile is set here, before any kernel starts: a plain ``pytest`` runs every
chapter with the small ``smoke`` sizes unless ``CRBOOK_PROFILE`` says
otherwise.
"""

import os

os.environ.setdefault("CRBOOK_PROFILE", "smoke")
# Two cores are shared by everything on the CI machine: one thread per process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
