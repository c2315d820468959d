"""What goes over the wire, as data: MLflow's scoring bodies (``mlflow_scoring``), the Open
Inference Protocol's tensors and binary extension (``oip_codec``), the JSON bodies of the
HTTP API's answers (``api_schemas``: the control routes', a prediction's, an error's), and the
grammar of a version's selector in a path or ``X-Model-Version`` (``selectors``). Decoded and
encoded here, with no I/O and nothing of the data plane; everything above builds on it."""
