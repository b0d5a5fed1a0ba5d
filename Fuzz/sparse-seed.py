#!/usr/bin/env python3
"""Writes the sparse description of an image file that the sparse harnesses (vhdx) take as input:
a little-endian u32 file size, then records (u32 offset, u16 length, bytes) of the non-zero 512-byte sectors,
adjacent sectors merged. Usage: sparse-seed.py IMAGE OUTPUT [MAX_FILE_SIZE]"""
import struct
import sys

source, output = sys.argv[1], sys.argv[2]
limit = int(sys.argv[3]) if len(sys.argv) > 3 else 64 << 20
data = open(source, "rb").read()[:limit]
records = []
offset = 0
while offset < len(data):
    sector = data[offset:offset + 512]
    if sector.strip(b"\0"):
        if records and records[-1][0] + len(records[-1][1]) == offset and len(records[-1][1]) + len(sector) <= 65535:
            records[-1] = (records[-1][0], records[-1][1] + sector)
        else:
            records.append((offset, sector))
    offset += 512
out = bytearray(struct.pack("<I", len(data)))
for start, chunk in records:
    out += struct.pack("<IH", start, len(chunk)) + chunk
open(output, "wb").write(out)
