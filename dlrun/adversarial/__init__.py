"""Adversarial examples and adversarial training.

Owns: the input gradient, the compiled attack and the attacking train step per Keras backend
(gradients), FGSM and PGD on a batch (attacks), and the pieces adversarial training adds to a
fit (training). The `attack` command that writes
results into a run is report.attack.
May import: model, data, spec, dlrun.backend, dlrun.errors.
"""
