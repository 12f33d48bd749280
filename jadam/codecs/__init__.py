"""Where an optimizer's moments live between steps, apart from its math.

A codec changes how a moment is stored, never what the rule computes:

* :mod:`jadam.codecs.packed`: the moments of small leaves in a few flat buffers
  (:func:`jadam.packed`); the rule runs once per buffer;
* :mod:`jadam.codecs.blockwise`: moments in 8-bit or 4-bit blocks (:func:`jadam.quantized`),
  decoded before the rule and encoded after it.

Each works for every rule it can serve and they compose (8-bit buffers of packed state), and
:func:`jadam.one_pass` (:mod:`jadam.one_pass`) wraps any of them. The plain layout
(:mod:`jadam.layout`) asks each codec to encode the state at ``init`` and to wrap its
per-array kernel, without knowing what the codec does.
"""
