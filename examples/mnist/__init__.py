"""The MNIST example: a Flax CNN trained with a jadam optimizer (``python -m examples.mnist``;
see ``__main__.py``)."""
