"""Bytes in, bytes out: listing and reading inputs, records, output lines, joins, sinks.

No torch and no Ray here; this room imports only ``batchcast.errors``, ``batchcast.coerce``
and the torch-free ``batchcast.forecast.config`` and ``batchcast.forecast.series``.

Modules: ``sources`` (listing, ranged reads, the S3 client), ``shards`` (byte-range
shards and their lines), ``records`` (the codec and the decode loop), ``validation`` (the
record contract), ``training`` (training channels), ``jsonl`` and ``join`` (output lines),
``sinks`` (atomic writers), ``model_files`` (a model's files in a folder or model.tar.gz).
"""

from batchcast.io.join import Join, JsonPath, compile_path
from batchcast.io.jsonl import encode_error, encode_forecasts, forecast_dicts, join_lines
from batchcast.io.model_files import read_model_files, write_model_files
from batchcast.io.records import DecodedShard, decode_records, renumber
from batchcast.io.shards import (
    CorruptInputError,
    PieceBudget,
    Shard,
    ShardLines,
    plan_shards,
    read_shard_lines,
)
from batchcast.io.sinks import (
    OutputError,
    Sink,
    exists,
    join_uri,
    open_sink,
    output_uri,
    remove_stale_temp,
    write_bytes_atomic,
)
from batchcast.io.sources import InputObject, list_inputs, open_range, s3_client
from batchcast.io.training import (
    TrainingChannels,
    TrainingData,
    load_training_channels,
    load_training_data,
)
from batchcast.io.validation import RecordContract

__all__ = [
    "CorruptInputError",
    "DecodedShard",
    "InputObject",
    "Join",
    "JsonPath",
    "OutputError",
    "PieceBudget",
    "RecordContract",
    "Shard",
    "ShardLines",
    "Sink",
    "TrainingChannels",
    "TrainingData",
    "compile_path",
    "decode_records",
    "encode_error",
    "encode_forecasts",
    "exists",
    "forecast_dicts",
    "join_lines",
    "join_uri",
    "list_inputs",
    "load_training_channels",
    "load_training_data",
    "open_range",
    "open_sink",
    "output_uri",
    "plan_shards",
    "read_model_files",
    "read_shard_lines",
    "remove_stale_temp",
    "renumber",
    "s3_client",
    "write_bytes_atomic",
    "write_model_files",
]
