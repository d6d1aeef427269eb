"""fraud-scoring training job: labelled transactions -> verified TFLite model bundle.

Needs the ``training`` extra (TensorFlow, scikit-learn, matplotlib); importing this package
alone imports none of them.
"""
