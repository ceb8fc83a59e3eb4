"""The data a run trains on: arrays and image folders in, what fit() takes out.

Owns: Keras' and the offline data sets, npz and csv files (arrays), image folders streamed
from disk (images), the fixed split and k-fold indices (splits), `data.classes` and
`data.limit` (subsets), tf.data pipelines and NumPy feeds (feed), and adapting preprocessing
layers (adapt); new inputs for `dlrun predict`, preprocessed as the run's training data
(inputs).
May import: spec, store, dlrun.backend, dlrun.errors. TensorFlow only inside feed's functions.
"""
