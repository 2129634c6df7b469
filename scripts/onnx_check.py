"""Checks edgeprune's hand-written ONNX protobuf structs against the official onnx.proto, and
optionally ONNX files against onnx's checker.

    python scripts/onnx_check.py [MODEL.onnx ...]

Reads src/formats/onnx/proto.rs and compares every `#[prost(...)]` field with the descriptor of the
same message in the installed `onnx` package: field name, number, label (repeated or not), scalar
type (an enum field may be read as int32, which has the same wire format) and, for repeated
scalars, packing. Then runs onnx.checker.check_model(full_check=True) (with shape inference) on
each MODEL given. Exits non-zero on the first mismatch or checker error.
"""
import os
import re
import sys

import onnx
from google.protobuf.descriptor import FieldDescriptor as FD

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PROTO_RS = os.path.join(ROOT, "src", "formats", "onnx", "proto.rs")

# Rust struct or oneof enum -> onnx message.
MESSAGES = {
    "ModelProto": onnx.ModelProto,
    "StringStringEntryProto": onnx.StringStringEntryProto,
    "OperatorSetIdProto": onnx.OperatorSetIdProto,
    "GraphProto": onnx.GraphProto,
    "NodeProto": onnx.NodeProto,
    "AttributeProto": onnx.AttributeProto,
    "ValueInfoProto": onnx.ValueInfoProto,
    "TensorProto": onnx.TensorProto,
    "Segment": onnx.TensorProto.Segment,
    "SparseTensorProto": onnx.SparseTensorProto,
    "TensorShapeProto": onnx.TensorShapeProto,
    "Dimension": onnx.TensorShapeProto.Dimension,
    "DimensionValue": onnx.TensorShapeProto.Dimension,
    "TypeProto": onnx.TypeProto,
    "TypeProtoValue": onnx.TypeProto,
    "TypeProtoTensor": onnx.TypeProto.Tensor,
}

TYPES = {
    FD.TYPE_INT64: "int64", FD.TYPE_INT32: "int32", FD.TYPE_FLOAT: "float", FD.TYPE_DOUBLE: "double",
    FD.TYPE_UINT64: "uint64", FD.TYPE_STRING: "string", FD.TYPE_BYTES: "bytes", FD.TYPE_MESSAGE: "message",
    FD.TYPE_ENUM: "int32",
}


def snake(name):
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def rust_fields():
    """(container, field name, prost attribute text) for every field of proto.rs."""
    text = open(PROTO_RS).read()
    out = []
    for block in re.finditer(r"pub (struct|enum) (\w+) \{(.*?)\n\}", text, re.S):
        container, body = block.group(2), block.group(3)
        for m in re.finditer(r"#\[prost\(([^\]]*)\)\]\s*(?:pub )?(?:r#)?(\w+)", body):
            attrs, name = m.group(1), m.group(2)
            if "oneof =" in attrs:
                continue  # the oneof's variants are checked as fields of their enum
            out.append((container, snake(name) if block.group(1) == "enum" else name, attrs))
    return out


def check_fields():
    fields = rust_fields()
    assert len(fields) > 60, f"only {len(fields)} fields parsed from {PROTO_RS}"
    for container, name, attrs in fields:
        desc = MESSAGES[container].DESCRIPTOR
        where = f"{desc.full_name}.{name}"
        f = desc.fields_by_name.get(name)
        if f is None:
            sys.exit(f"{where}: no such field in onnx.proto")
        tag = int(re.search(r'tag = "(\d+)"', attrs).group(1))
        if tag != f.number:
            sys.exit(f"{where}: tag {tag}, onnx.proto says {f.number}")
        kind = attrs.split(",")[0].strip().split(" ")[0]
        if kind != TYPES[f.type]:
            sys.exit(f"{where}: type {kind}, onnx.proto says {TYPES[f.type]}")
        repeated = "repeated" in attrs
        is_repeated = f.is_repeated if hasattr(f, "is_repeated") else f.label == FD.LABEL_REPEATED
        if repeated != is_repeated:
            sys.exit(f"{where}: repeated={repeated}, onnx.proto says {is_repeated}")
        if repeated and f.type not in (FD.TYPE_MESSAGE, FD.TYPE_STRING, FD.TYPE_BYTES):
            packed = 'packed = "true"' in attrs
            official = f.is_packed if hasattr(f, "is_packed") else f.GetOptions().packed
            if packed != official:
                sys.exit(f"{where}: packed={packed}, onnx.proto says {official}")
        if not repeated and f.containing_oneof is None and "optional" not in attrs:
            sys.exit(f"{where}: a proto2 optional field must be an Option (`optional`)")
    print(f"{len(fields)} fields of {PROTO_RS} agree with onnx {onnx.__version__}'s onnx.proto")


def main(models):
    check_fields()
    for path in models:
        onnx.checker.check_model(path, full_check=True)
        print(f"{path}: passes onnx.checker (full check)")


if __name__ == "__main__":
    main(sys.argv[1:])
