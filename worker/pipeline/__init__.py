"""The pipeline: poll -> decode -> score -> hand the batch's records to the delivery guarantee.

``loop.py`` is the loop; ``decoder_process.py`` decodes in a child process; ``shadow.py`` scores the
challenger beside the champion; ``lag.py`` reports consumer lag.
"""
