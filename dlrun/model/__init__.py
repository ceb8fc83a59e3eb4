"""The network: a spec's layers and compile settings as a Keras model, and models read back.

Owns: layers by Keras' class names (builder), optimizer, loss and metric lookups and their
checks (compiling), pretrained bases and finetuning (transfer) with the base's own class
(frozen), the one guarded checkpoint loader (checkpoints), outputs to classes (outputs) and
which way a metric is better (metrics).
May import: store, spec, dlrun.backend, dlrun.errors. Keras only inside functions.
"""
