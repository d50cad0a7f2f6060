"""A GGUF that holds only another GGUF's tokenizer and general metadata, without tensors.

    python scripts/gguf_vocab.py SRC.gguf OUT.gguf     (needs the ``gguf`` package)

SmolLM2's file is 98 MB; its vocabulary alone is a few MB. ``scripts/gpu_prepare.sh`` makes one
to carry to a lent GPU device, where ``synth_gguf.py`` builds random-weight models around it.
"""

from __future__ import annotations

import sys

import gguf  # type: ignore[import-not-found]

SCALAR = {
    gguf.GGUFValueType.UINT8: "add_uint8",
    gguf.GGUFValueType.INT8: "add_int8",
    gguf.GGUFValueType.UINT16: "add_uint16",
    gguf.GGUFValueType.INT16: "add_int16",
    gguf.GGUFValueType.UINT32: "add_uint32",
    gguf.GGUFValueType.INT32: "add_int32",
    gguf.GGUFValueType.UINT64: "add_uint64",
    gguf.GGUFValueType.INT64: "add_int64",
    gguf.GGUFValueType.FLOAT32: "add_float32",
    gguf.GGUFValueType.FLOAT64: "add_float64",
    gguf.GGUFValueType.BOOL: "add_bool",
}


def main(src: str, out: str) -> int:
    reader = gguf.GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(out, arch)
    kept = 0
    for key, field in reader.fields.items():
        if not key.startswith(("tokenizer.", "general.")) or key == "general.architecture":
            continue
        kind = field.types[0]
        value = field.contents()
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, value)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(key, value)
        else:
            getattr(writer, SCALAR[kind])(key, value)
        kept += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    sys.stdout.write(f"{out}: {kept} fields of {src}, no tensors\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
