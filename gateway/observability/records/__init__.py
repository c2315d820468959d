"""Inference records: each sampled request's inputs and outputs, written by one writer thread,
off the request path, as CloudEvents to a sink (rotating files, HTTP, a Redis stream) or as
rows of the inference tables (Parquet on a folder or S3: ``tables.py``, whose rows also hold
failed requests, shadows and labels).

``record.InferenceRecord`` is what the request path hands over, ``recorder.Recorder`` takes it
(``offer``: never blocks, never raises; ``offer_labels`` for the feedback code's labels) and
``recorder.recorder_for`` builds one from the settings. Everything that costs (parsing bodies,
redaction, events or rows, I/O) runs in the writer.
"""
