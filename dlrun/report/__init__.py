"""Reading runs back for people: scores, tables, plots.

Owns: `evaluate`, `attack` and `features` on a run's checkpoint, learning curves and confusion
matrices (plots), the `runs` listing (listing), the `compare` table (compare), the `--where`
grammar (where) and tables that fit the terminal (tables).
May import: adversarial, model, data, store, spec. listing, compare, where and tables import no
TensorFlow: `dlrun runs` and `dlrun compare` stay fast.
"""
