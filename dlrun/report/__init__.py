"""Reading runs back for people: scores, tables, plots.

Owns: `evaluate`, `attack` and `features` on a run's checkpoint, `predict` (new inputs scored;
`engines`: Keras, or the run's verified ONNX export without Keras) and `export` (the model
for other programs, verified; `script`, the spec as plain Keras), the progress bar of
batch-wise commands (progress), learning curves and confusion matrices (plots), the `runs`
listing (listing), the `compare` table (compare), the `--where` grammar (where) and tables
that fit the terminal (tables).
May import: adversarial, model, data, store, spec. listing, compare, where and tables import no
TensorFlow: `dlrun runs` and `dlrun compare` stay fast.
"""
