"""The moving-shapes world: prompts, renderer with defects, oracle annotator, simulated labels, pairs.

Light to import (numpy, scipy); the pieces:
  prompts    the grammar and the train / held-out split
  render     numpy renderer and the ten defects
  oracle     VQ / MQ / TA of any video from its pixels
  annotator  Rao-Kupper simulated labels and the accuracy ceiling
  dataset    informative pairs written as mp4 + parquet
"""
