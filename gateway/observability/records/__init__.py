"""Inference records: each sampled request's inputs and outputs, written as CloudEvents to a
sink (rotating files, HTTP, a Redis stream) by one writer thread, off the request path.

``record.InferenceRecord`` is what the request path hands over, ``recorder.Recorder`` takes it
(``offer``: never blocks, never raises) and ``recorder.recorder_for`` builds one from the
settings. Everything that costs (parsing bodies, redaction, events, I/O) runs in the writer.
"""
