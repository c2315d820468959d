"""A job's files: finding the inputs (a folder, a glob, an S3 prefix), splitting them into
chunks (Parquet row groups, CSV and JSON-lines byte ranges cut at line starts), reading one
chunk's bytes only, and committing one chunk's output exactly once.

The seam with the job runner (which owns the queue, the scoring and the routes) is this
package's five modules, and only their public names: :mod:`.errors`, :mod:`.locations`
(``find_inputs``), :mod:`.chunks` (``plan_chunks``, ``ChunkSpec``), :mod:`.readers`
(``read_chunk``) and :mod:`.writers` (``OutputLocation``). :mod:`.storage` is how they reach a
folder or S3, and no one else's business.
"""
