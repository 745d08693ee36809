"""Per-identity baselines and anomaly scorers for AI workloads. Pure library: no Kafka, no Faust.

``BUILD`` says which build of the detector modules runs: ``"compiled"``
(mypyc, ``make compile``) or ``"pure"`` (the Python sources); see
:mod:`detectors._native`.
"""

from ._native import activate as _activate

BUILD: str = _activate(__path__)
