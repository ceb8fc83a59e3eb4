"""One run's life, from its folder to its recorded outcome.

Owns: preparing, training and resuming a run (runner), the fit loop and the context that turns
every stop or fault into a recorded status (fit), the callbacks that record and show progress
(callbacks), devices, mixed precision and data parallelism (devices), one model over several
processes (cluster) and starting those processes here or on Ray (launch).
May import: report (plots, hparams), adversarial, model, data, store, spec, dlrun.backend.
"""
