"""Reading an offline W&B run back (its ``run-*.wandb`` record log), for tests.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks
of chunks (crc32 4 bytes, length 2, type 1: full/first/middle/last) holding protobuf Records.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes):
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run log")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        pos += HEADER
        chunk = data[pos:pos + length]
        pos += length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
        elif kind == 0 and length == 0:  # zero padding up to the next block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """History (last value per key), config, run info (name, group, job type), the JSON of the
    tables it logged (by key) and the exit code (None if never finished) of an offline run."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log_file,) = Path(run_dir).glob("run-*.wandb")
    history: dict[str, Any] = {}
    config: dict[str, Any] = {}
    exit_code = None
    run: dict[str, str] = {}
    for payload in _payloads(log_file.read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            for item in record.history.item:
                history[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                history.setdefault(item.key or "/".join(item.nested_key), json.loads(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "run":
            run = {"name": record.run.display_name, "group": record.run.run_group,
                   "job_type": record.run.job_type}
        elif kind == "exit":
            exit_code = record.exit.exit_code
    # media are logged as nested keys: KEY/_type, KEY/path (tables), KEY/values + KEY/bins (histograms)
    tables, histograms = {}, {}
    for key, value in history.items():
        if key.endswith("/_type") and value == "table-file":
            prefix = key[: -len("/_type")]
            tables[prefix] = json.loads((Path(run_dir) / "files" / history[f"{prefix}/path"]).read_text())
        elif key.endswith("/_type") and value == "histogram":
            prefix = key[: -len("/_type")]
            histograms[prefix] = {"values": history[f"{prefix}/values"], "bins": history[f"{prefix}/bins"]}
    return {"history": history, "config": config, "run": run, "tables": tables,
            "histograms": histograms, "exit_code": exit_code}
