"""Bytes in, bytes out: listing and reading inputs, records, output lines, joins, sinks.

No torch and no Ray here; this room imports only ``batchcast.errors`` and the torch-free
``batchcast.forecast.config`` and ``batchcast.forecast.series``.
"""

from batchcast.io.join import Join, JsonPath, compile_path
from batchcast.io.jsonl import encode_error, encode_forecasts, forecast_dicts, join_lines
from batchcast.io.records import (
    DecodedShard,
    RecordContract,
    TrainingData,
    decode_records,
    load_training_data,
    renumber,
)
from batchcast.io.shards import Shard, ShardLines, plan_shards, read_shard_lines
from batchcast.io.sinks import Sink, exists, join_uri, open_sink, output_uri, write_bytes_atomic
from batchcast.io.sources import InputObject, list_inputs, open_range, s3_client

__all__ = [
    "DecodedShard",
    "InputObject",
    "Join",
    "JsonPath",
    "RecordContract",
    "Shard",
    "ShardLines",
    "Sink",
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
    "load_training_data",
    "open_range",
    "open_sink",
    "output_uri",
    "plan_shards",
    "read_shard_lines",
    "renumber",
    "s3_client",
    "write_bytes_atomic",
]
