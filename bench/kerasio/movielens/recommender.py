"""keras.io "Collaborative Filtering for Movie Recommendations" (structured_data/collaborative_
filtering_movielens): the RecommenderNet model, and MovieLens-small-shaped ratings."""

import keras
import numpy as np
from keras import layers, ops

USERS, MOVIES = 610, 9724  # ml-latest-small, as the example counts them


@keras.saving.register_keras_serializable(package="kerasio_movielens")
class RecommenderNet(keras.Model):
    """sigmoid(user . movie + user bias + movie bias) from 50-dimensional embeddings."""

    def __init__(self, num_users, num_movies, embedding_size, **kwargs):
        super().__init__(**kwargs)
        self.num_users = num_users
        self.num_movies = num_movies
        self.embedding_size = embedding_size
        self.user_embedding = layers.Embedding(
            num_users,
            embedding_size,
            embeddings_initializer="he_normal",
            embeddings_regularizer=keras.regularizers.l2(1e-6),
        )
        self.user_bias = layers.Embedding(num_users, 1)
        self.movie_embedding = layers.Embedding(
            num_movies,
            embedding_size,
            embeddings_initializer="he_normal",
            embeddings_regularizer=keras.regularizers.l2(1e-6),
        )
        self.movie_bias = layers.Embedding(num_movies, 1)

    def call(self, inputs):
        user, movie = inputs[:, 0], inputs[:, 1]
        both = self.user_embedding(user) * self.movie_embedding(movie)
        score = ops.sum(both, axis=1, keepdims=True)
        return ops.sigmoid(score + self.user_bias(user) + self.movie_bias(movie))

    def get_config(self):
        return {
            "num_users": self.num_users,
            "num_movies": self.num_movies,
            "embedding_size": self.embedding_size,
        }


def build(num_users=USERS, num_movies=MOVIES, embedding_size=50):
    return RecommenderNet(num_users, num_movies, embedding_size)


def load(n=5000, seed=0):
    """(user, movie) index pairs and ratings 0.5..5 scaled to 0..1 as the example does, from a
    hidden low-rank taste model; 90% train, the last 10% the validation (and test) data."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, USERS, n)
    movies = rng.integers(0, MOVIES, n)
    taste = rng.normal(size=(USERS, 3)) @ rng.normal(size=(3, MOVIES))[:, :]
    raw = taste[users, movies]
    rating = np.clip(np.round((raw - raw.min()) / np.ptp(raw) * 9) / 2 + 0.5, 0.5, 5.0)
    x = np.stack([users, movies], axis=1).astype("int64")
    y = ((rating - 0.5) / 4.5).astype("float32")[:, None]
    cut = int(n * 0.9)
    return {
        "x_train": x[:cut],
        "y_train": y[:cut],
        "x_val": x[cut:],
        "y_val": y[cut:],
        "x_test": x[cut:],
        "y_test": y[cut:],
    }
