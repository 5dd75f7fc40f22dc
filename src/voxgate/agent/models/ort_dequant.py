"""Moonshine's encoder and decoder rebuilt at load: weights dequantized once, then quantized again the way a CPU
runs fast (int8 matrix products with activations quantized on the fly), not dequantized on every run.

Why this exists: the ``decoder_model_merged.ort`` in the moonshine-cpp wheel keeps its 81 weight matrices as int8
and turns them back into floats (Cast, Mul, Add at the top of the graph) on every run. One decode step took 69 ms on
one core, of which the matrix products were 8 %; an utterance of 2 s decoded in ~550 ms. An ORT-format model cannot
be re-optimized, so this module reads it (onnxruntime's own flatbuffer reader, ``onnxruntime.tools.ort_format_model``;
this is the only module that touches it, and ``tests/test_agent_asr.py`` fails if an upgrade moves it), does the
dequantization once with numpy, and builds an ONNX model with the float weights as initializers around the same
``If`` node (cache / no cache). Same words out, ~3.5 × less CPU per utterance (docs/performance.md), at the cost of
~120 MB more memory per process (float weights instead of int8).

Then ``int8_model``: a decode step reads every weight once for one token, so it is bound by memory, not arithmetic;
float weights are 4 × the bytes. onnxruntime's own dynamic quantization turns each float ``MatMul`` into
``MatMulInteger`` on int8 weights (the encoder's too): another ~40 % less CPU per utterance, word errors unchanged
on ``bench/asr.py``'s 160 clips. Quantizing takes a few seconds, so the result is cached on disk (``cache_dir``),
keyed by the source file and the library versions; where nothing is writable it is built in a temporary directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile

import numpy as np

_NP = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16,
       11: np.float64}
_ONNX_TYPES = {1, 2, 3, 5, 6, 7, 9, 10, 11}  # ORT's TensorDataType values are ONNX's


def _array(t) -> np.ndarray:
    dims = [t.Dims(i) for i in range(t.DimsLength())]
    raw = t.RawDataAsNumpy().tobytes() if t.RawDataLength() else b""
    return np.frombuffer(raw, _NP[t.DataType()]).reshape(dims).copy()


def _attribute(a):
    from onnx import AttributeProto, helper, numpy_helper

    name, kind = a.Name().decode(), a.Type()
    if kind == 1:
        return helper.make_attribute(name, a.F())
    if kind == 2:
        return helper.make_attribute(name, a.I())
    if kind == 3:
        return helper.make_attribute(name, a.S())
    if kind == 4:
        return helper.make_attribute(name, numpy_helper.from_array(_array(a.T()), a.T().Name().decode()))
    if kind == 5:
        return helper.make_attribute(name, _graph(a.G(), name))
    if kind == 6:
        return helper.make_attribute(name, [a.Floats(i) for i in range(a.FloatsLength())],
                                     attr_type=AttributeProto.FLOATS)
    if kind == 7:
        return helper.make_attribute(name, [a.Ints(i) for i in range(a.IntsLength())], attr_type=AttributeProto.INTS)
    if kind == 8:
        return helper.make_attribute(name, [a.Strings(i) for i in range(a.StringsLength())],
                                     attr_type=AttributeProto.STRINGS)
    raise ValueError(f"attribute {name!r}: type {kind} not handled")


def _nodes(g, skip=()) -> list:
    from onnx import helper

    out = []
    for i in range(g.NodesLength()):
        n = g.Nodes(i)
        if i in skip:
            continue
        node = helper.make_node(n.OpType().decode(), [n.Inputs(k).decode() for k in range(n.InputsLength())],
                                [n.Outputs(k).decode() for k in range(n.OutputsLength())], name=n.Name().decode(),
                                domain=n.Domain().decode())
        node.attribute.extend(_attribute(n.Attributes(a)) for a in range(n.AttributesLength()))
        out.append(node)
    return out


def _graph(g, name: str):
    """A subgraph (an ``If`` branch): its nodes, its own initializers, its outputs (it reads the rest from outside)."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(_array(g.Initializers(j)), g.Initializers(j).Name().decode())
             for j in range(g.InitializersLength())]
    outputs = [helper.make_tensor_value_info(g.Outputs(k).decode(), TensorProto.FLOAT, None)
               for k in range(g.OutputsLength())]
    return helper.make_graph(_nodes(g), name, [], outputs, inits)


def _elem_types(g) -> dict:
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.TensorTypeAndShape import TensorTypeAndShape
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.TypeInfoValue import TypeInfoValue

    out = {}
    for i in range(g.NodeArgsLength()):
        na = g.NodeArgs(i)
        ti = na.Type()
        if ti is not None and ti.ValueType() == TypeInfoValue.tensor_type:
            t = TensorTypeAndShape()
            t.Init(ti.Value().Bytes, ti.Value().Pos)
            shape = t.Shape()
            dims = None
            if shape is not None:
                dims = []
                for d in range(shape.DimLength()):
                    v = shape.Dim(d).Value()
                    dims.append(None if v is None else v.DimValue() if v.DimType() == 1 else
                                (v.DimParam() or b"").decode() or None)
            out[na.Name().decode()] = (t.ElemType(), dims)
    return out


def _reads(nodes) -> set:
    """Every name the nodes read, their subgraphs' included."""
    out = set()
    for node in nodes:
        out.update(node.input)
        for a in node.attribute:
            if a.HasField("g"):
                out |= _reads(a.g.node)
    return out


def dequantized(path: str) -> bytes:
    """The ORT-format model at ``path`` as a serialized ONNX model, its top-level Cast/Mul/Add dequantization of
    constant weights computed once. Raises ``ValueError`` on a graph of another shape (then use the file as it is)."""
    from onnx import helper, numpy_helper
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.InferenceSession import InferenceSession

    model = InferenceSession.GetRootAsInferenceSession(open(path, "rb").read(), 0).Model()
    g = model.Graph()
    consts = {g.Initializers(i).Name().decode(): _array(g.Initializers(i)) for i in range(g.InitializersLength())}
    foldable, rest = [], []
    for i in range(g.NodesLength()):
        n = g.Nodes(i)
        op, ins = n.OpType().decode(), [n.Inputs(k).decode() for k in range(n.InputsLength())]
        known = all(x in consts or x in {o for _, _, outs in foldable for o in outs} for x in ins)
        if op in ("Cast", "Mul", "Add") and known:
            if op == "Cast" and n.Attributes(0).I() != 1:
                raise ValueError("a Cast to something other than float")
            foldable.append((op, ins, [n.Outputs(0).decode()]))
        else:
            rest.append(i)
    if not foldable:
        raise ValueError("no constant dequantization to fold")
    # fold in place, dropping each intermediate once nothing else reads it: the peak stays near one float copy
    readers: dict = {}
    for _, ins, _ in foldable:
        for x in ins:
            readers[x] = readers.get(x, 0) + 1
    folded = set()
    for op, ins, (out,) in foldable:
        a = consts[ins[0]]
        if op == "Cast":
            value = a.astype(np.float32)
        else:
            b = consts[ins[1]]
            reuse = ins[0] in folded and readers[ins[0]] == 1 and a.shape == np.broadcast_shapes(a.shape, b.shape)
            value = (np.multiply if op == "Mul" else np.add)(a, b, out=a if reuse else None, dtype=np.float32)
        consts[out] = value
        folded.add(out)
        for x in ins:
            readers[x] -= 1
            if readers[x] == 0 and x in folded:
                del consts[x]
    types = _elem_types(g)
    inputs = [helper.make_tensor_value_info(g.Inputs(i).decode(), *types.get(g.Inputs(i).decode(), (1, None)))
              for i in range(g.InputsLength())]
    outputs = [helper.make_tensor_value_info(g.Outputs(i).decode(), *types.get(g.Outputs(i).decode(), (1, None)))
               for i in range(g.OutputsLength())]
    # the constants the remaining nodes (and their subgraphs) read: folded weights and untouched originals alike
    nodes = _nodes(g, skip=set(range(g.NodesLength())) - set(rest))
    used = _reads(nodes)
    inits = []
    for k in [k for k in consts if k in used]:
        inits.append(numpy_helper.from_array(consts.pop(k), k))
    consts.clear()
    opsets = [helper.make_opsetid(model.OpsetImport(i).Domain().decode(), model.OpsetImport(i).Version())
              for i in range(model.OpsetImportLength())]
    onnx_model = helper.make_model(helper.make_graph(nodes, "decoder", inputs, outputs, inits), opset_imports=opsets)
    onnx_model.ir_version = 8
    data = onnx_model.SerializeToString()
    del onnx_model, inits
    return data


def cache_dir() -> str:
    """``$VOXGATE_CACHE_DIR``, else ``$XDG_CACHE_HOME/voxgate``, else ``~/.cache/voxgate``."""
    if os.environ.get("VOXGATE_CACHE_DIR"):
        return os.environ["VOXGATE_CACHE_DIR"]
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "voxgate")


def int8_model(path: str) -> str | bytes:
    """The ORT-format model at ``path`` rebuilt for the CPU: float weights (``dequantized``), then dynamic int8
    quantization of its matrix products (onnxruntime.quantization). The cached file's path, or the serialized ONNX
    model where nothing is writable."""
    from importlib.metadata import version  # not `import onnx`: a cached load needs none of it

    import onnxruntime

    digest = hashlib.sha256(f"{onnxruntime.__version__}|{version('onnx')}|int8-v1".encode())
    with open(path, "rb") as fh:  # the file's content (its size, first and last MiB), not its path or time:
        digest.update(str(os.fstat(fh.fileno()).st_size).encode())  # a copied image keeps its cache valid
        digest.update(fh.read(1 << 20))
        fh.seek(max(0, os.fstat(fh.fileno()).st_size - (1 << 20)))
        digest.update(fh.read())
    key = digest.hexdigest()[:16]
    name = f"{os.path.basename(path).rsplit('.', 1)[0]}-{key}.onnx"
    for folder in (cache_dir(), None):
        cached = os.path.join(folder, name) if folder else None
        if cached and os.path.exists(cached):
            return cached
        try:
            if folder:
                os.makedirs(folder, exist_ok=True)
            from onnxruntime.quantization import QuantType, quantize_dynamic  # only to build: a heavy import

            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                src, out = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
                with open(src, "wb") as fh:
                    fh.write(dequantized(path))
                logging.disable(logging.WARNING)  # it advises "pre-processing" on the root logger, every time
                try:
                    quantize_dynamic(src, out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                                     extra_options={"EnableSubgraph": True})
                finally:
                    logging.disable(logging.NOTSET)
                if cached:
                    os.replace(out, cached)  # atomic: a process loading at the same time sees all of it or none
                    return cached
                with open(out, "rb") as fh:
                    return fh.read()
        except OSError:
            continue  # not writable: build it in a temporary directory instead
    raise OSError("no writable directory for the quantized model")
