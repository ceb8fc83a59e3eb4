"""Models beyond a stack: named entries, `inputs:` references, blocks, through Keras'
functional API.  [TensorFlow]

`expand` turns model.layers into a flat list of nodes, each a Keras layer class, its arguments
and what it reads: blocks are copied `repeat` times with their `$params` replaced, and every
problem (an unknown or later name, a name given twice, a param never given, a block that
includes itself) is found before anything is built. `build_graph` then calls each layer on the
outputs it names and makes `keras.Model(inputs, outputs)`. Only earlier names can be read, so a
graph written this way has no cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlrun.errors import SpecError, UsageError, first_line
from dlrun.spec.problems import did_you_mean
from dlrun.spec.schema import Spec

BLOCK_INPUT = "in"  # inside a block: what the block reads
DEFAULT_INPUT = "input"  # the one input of a graph that names none
DEFAULT_INPUT_MARK = "#input"  # a block first in model.layers reads the graph's input
BASE = "base"  # with model.base: the nested base model's name, and its output in a graph
BASE_PREFIX = "base."  # base.NAME: the output of the base's inner layer NAME (a tap)


def one_input_and_output(spec: Spec, run_path, command: str, error: type = UsageError) -> None:
    """A command that reads one input array and one output refuses a graph of several, in
    one line."""
    for names, what in (
        (spec.model.several_inputs, "input"),
        (spec.model.several_outputs, "output"),
    ):
        if names:
            raise error(
                f"{run_path}: {command} takes models of one {what}; this run's model has "
                f"{len(names)} ({', '.join(names)})"
            )


@dataclass
class Node:
    loc: tuple  # where the entry is in the spec (for messages)
    type: str
    kwargs: dict[str, Any]
    inputs: Any  # None (the previous output), a name, a list or a mapping of names
    name: str | None  # the name later entries read it by
    layer_name: str | None = None  # the Keras layer's own name, unique in the model


def _substitute(value: Any, params: dict[str, Any], loc: tuple, spec: Spec, found: set) -> Any:
    """`$name` strings replaced by their param, in nested values too."""
    if isinstance(value, str) and value.startswith("$"):
        key = value[1:]
        if key not in params:
            known = ", ".join(sorted(params)) or "none"
            raise spec.error(
                loc,
                f"{value} is not a param of this block (its params: {known}); add it to "
                "the block's params or give it in `with:`",
            )
        found.add(key)
        return params[key]
    if isinstance(value, list):
        return [_substitute(item, params, loc, spec, found) for item in value]
    if isinstance(value, dict):
        return {k: _substitute(v, params, loc, spec, found) for k, v in value.items()}
    return value


def _rename(reference: Any, names: dict[str, str]) -> Any:
    """A reference inside a block copy: its local names -> the graph's names."""
    if isinstance(reference, str):
        return names.get(reference, reference)
    if isinstance(reference, list):
        return [names.get(item, item) for item in reference]
    if isinstance(reference, dict):
        return {key: names.get(item, item) for key, item in reference.items()}
    return reference


def expand(spec: Spec) -> tuple[list[Node], dict[str, str]]:
    """model.layers with blocks copied in: one Node per Keras layer, and the top level's names
    -> the graph names they stand for (a named block: its last node's)."""
    nodes: list[Node] = []
    counter = {"copies": 0}
    top: dict[str, str] = {}

    def add(entries, loc_of, params: dict, stack: tuple, local: dict[str, str]) -> None:
        # local: names as this level writes them -> graph names
        for index, entry in enumerate(entries):
            loc = loc_of(index)
            extra = entry.model_extra or {}
            name = extra.get("name")
            if name is not None and name in local and name != BLOCK_INPUT:
                raise spec.error((*loc, "name"), f"the name {name!r} is given twice here")
            used: set = set()
            inputs = _substitute(extra.get("inputs"), params, (*loc, "inputs"), spec, used)
            inputs = _rename(inputs, local)
            if entry.type is not None:
                kwargs = _substitute(entry.kwargs(), params, loc, spec, used)
                graph_name = name
                if name is not None and stack:  # inside a block copy: unique in the graph
                    graph_name = f"{stack[-1][1]}/{name}"
                    kwargs = {**kwargs, "name": None}
                nodes.append(Node(loc, entry.type, kwargs, inputs, graph_name))
                if name is not None:
                    local[name] = graph_name
                continue
            block_name = extra["block"]
            blocks = spec.model.blocks
            if block_name not in blocks:
                raise spec.error(
                    (*loc, "block"),
                    f"no block {block_name!r} in model.blocks"
                    + did_you_mean(block_name, list(blocks)),
                )
            if block_name in [name for name, _ in stack]:
                chain = " -> ".join([*(name for name, _ in stack), block_name])
                raise spec.error((*loc, "block"), f"a block includes itself ({chain})")
            block = blocks[block_name]
            given = _substitute(extra.get("with", {}), params, (*loc, "with"), spec, used)
            unknown = [key for key in given if key not in block.params and not _used_in(block, key)]
            if unknown:
                raise spec.error(
                    (*loc, "with", unknown[0]),
                    f"block {block_name} has no param {unknown[0]!r}"
                    + did_you_mean(unknown[0], list(block.params)),
                )
            values = {**block.params, **given}
            reads = inputs
            for _ in range(extra.get("repeat", 1)):
                counter["copies"] += 1
                tag = f"{block_name}{counter['copies']}"
                names = {**local, BLOCK_INPUT: _block_input(reads, nodes, loc, spec)}
                block_loc = ("model", "blocks", block_name, "layers")
                add(
                    block.layers,
                    lambda i, block_loc=block_loc: (*block_loc, i),
                    values,
                    (*stack, (block_name, tag)),
                    names,
                )
                reads = None  # the next copy reads this one's output
            if name is not None:
                last = nodes[-1]
                if last.name is None:
                    last.name = name
                local[name] = last.name

    add(spec.model.layers, lambda i: ("model", "layers", i), {}, (), top)
    return nodes, top


def _used_in(block, key: str) -> bool:
    """A param the block's layers use ($key) without a default."""
    return f"${key}" in repr([entry.model_dump() for entry in block.layers])


def _block_input(reads: Any, nodes: list[Node], loc: tuple, spec: Spec) -> str:
    """The graph name a block copy reads as `in`: its `inputs`, or the previous output."""
    if reads is None:
        if not nodes:
            return DEFAULT_INPUT_MARK
        previous = nodes[-1]
        if previous.name is None:
            previous.name = f"#{len(nodes) - 1}"  # an internal name: not writable in a spec
        return previous.name
    if not isinstance(reads, str):
        raise spec.error((*loc, "inputs"), "a block reads one input: give one name")
    return reads


def input_shapes(spec: Spec, input_shape) -> dict[str, tuple]:
    """Each input's shape: as model.inputs declares it, else as the data gives it (one shape,
    or {input name: shape} for several inputs); a declared shape the data contradicts is an
    error naming both."""
    declared = spec.model.inputs or {DEFAULT_INPUT: None}
    shapes = {}
    for name, declared_input in declared.items():
        data = input_shape.get(name) if isinstance(input_shape, dict) else input_shape
        shape = declared_input.shape if declared_input is not None else None
        if shape is None:
            shapes[name] = tuple(data)
            continue
        same = len(shape) == len(data or ()) and all(
            s is None or s == d for s, d in zip(shape, data, strict=True)
        )
        agrees = data is None or same
        if not agrees and isinstance(input_shape, dict):
            raise spec.error(
                ("model", "inputs", name, "shape"),
                f"input {name!r} is declared {tuple(shape)} but its data has samples of shape "
                f"{tuple(data)}; declare the data's shape or leave shape out",
            )
        shapes[name] = tuple(shape)
    return shapes


def taps(nodes: list[Node]) -> dict[str, tuple]:
    """The base's inner layers the graph reads (`base.NAME`): {NAME: where it is first read}."""
    found: dict[str, tuple] = {}
    for node in nodes:
        reference = node.inputs
        names = reference.values() if isinstance(reference, dict) else reference
        for name in [names] if isinstance(names, str) else names or ():
            if name.startswith(BASE_PREFIX):
                found.setdefault(name.removeprefix(BASE_PREFIX), (*node.loc, "inputs"))
    return found


def build_graph(spec: Spec, input_shape, taken: dict, given: set, classes, base=None):
    """keras.Model(inputs, outputs) from the expanded nodes; every problem is a SpecError.

    input_shape: the data's sample shape, or {input name: shape} for several inputs.
    base: with model.base, a function of the taps (see `taps`) giving the image input and the
    base's outputs (its own, then each tap's): the graph reads them as `base` and `base.NAME`,
    and an entry without `inputs:` at the start reads `base`."""
    import keras

    from dlrun.model.layers import arguments, layer_name

    nodes, aliases = expand(spec)
    tensors: dict[str, Any] = {}
    model_inputs = []
    if base is not None:
        if BASE in aliases:
            raise spec.error(
                _named_loc(spec, BASE), f"{BASE!r} names the base; give this entry another name"
            )
        tapped = taps(nodes)
        image, outputs = base(tapped)
        outputs = outputs if tapped else [outputs]
        tensors[BASE] = outputs[0]
        tensors.update(
            {BASE_PREFIX + name: tensor for name, tensor in zip(tapped, outputs[1:], strict=True)}
        )
        declared = {}
        model_inputs.append(image)
        first = outputs[0]
    else:
        declared = input_shapes(spec, input_shape)
        for name, shape in declared.items():
            tensors[name] = keras.Input(shape=shape, name=name)
            model_inputs.append(tensors[name])
            if name in aliases:
                raise spec.error(("model", "inputs", name), f"{name!r} names an input and an entry")
        first = model_inputs[0]
    tensors[DEFAULT_INPUT_MARK] = first
    later = {node.name: node.loc for node in nodes if node.name}
    previous = first
    used = set()
    problems = []
    for node in nodes:
        args = _resolve(node, previous, tensors, later, spec, used)
        cls = classes.get(node.type)
        if not isinstance(cls, type):
            from dlrun.model.layers import unknown_layer

            problems.append(spec.error((*node.loc, "type"), unknown_layer(node.type, classes)))
            continue
        kwargs = {k: v for k, v in node.kwargs.items() if v is not None or k != "name"}
        accepted = arguments(cls)
        unknown = [k for k in kwargs if accepted is not None and k not in accepted]
        if unknown:
            problems += [
                spec.error(
                    (*node.loc, k),
                    f"{node.type} has no argument {k!r}" + did_you_mean(k, sorted(accepted)),
                )
                for k in unknown
            ]
            continue
        if "name" not in kwargs:
            kwargs["name"] = layer_name(cls.__name__, taken, given)
        try:
            layer = cls(**kwargs)
        except Exception as exc:
            problems.append(
                spec.error(node.loc, f"{node.type} refused its arguments: {first_line(exc)}")
            )
            continue
        try:
            output = layer(**args) if isinstance(args, dict) else layer(args)
        except Exception as exc:
            problems.append(spec.error(node.loc, _call_problem(node, args, exc)))
            continue
        if node.name is not None:
            tensors[node.name] = output
        previous = output
    if problems:
        raise SpecError([line for error in problems for line in error.problems])
    for index, name in enumerate(declared):
        if name not in used and not (index == 0 and _reads_first(nodes)):
            raise spec.error(("model", "inputs", name), f"input {name!r} is never used")
    outputs = spec.model.outputs
    if outputs is None:
        model_outputs = previous
    else:
        wanted = [outputs] if isinstance(outputs, str) else outputs
        found = []
        for name in wanted:
            graph_name = aliases.get(name, name)
            if graph_name not in tensors or name.startswith("#") or name == DEFAULT_INPUT:
                known = list(aliases)
                raise spec.error(
                    ("model", "outputs"),
                    f"no entry is named {name!r}" + did_you_mean(name, known),
                )
            found.append(tensors[graph_name])
        # Several outputs: a dict, so that losses, metrics and targets go by output name.
        model_outputs = dict(zip(wanted, found, strict=True)) if len(found) > 1 else found[0]
    name = spec.name.replace(".", "_").replace("-", "_")
    # Several inputs: a dict, so that fit() and evaluate() take the data's {input: array}.
    inputs = model_inputs[0]
    if len(model_inputs) > 1:
        inputs = dict(zip(declared, model_inputs, strict=True))
    return keras.Model(inputs, model_outputs, name=name)


def _named_loc(spec: Spec, name: str) -> tuple:
    """Where the top-level entry named `name` is written."""
    names = [(entry.model_extra or {}).get("name") for entry in spec.model.layers]
    index = names.index(name)
    return ("model", "layers", index, "name")


def _reads_first(nodes: list[Node]) -> bool:
    """The first entry reads the graph's input implicitly (no `inputs:`)."""
    return bool(nodes) and nodes[0].inputs is None


def _resolve(node: Node, previous, tensors: dict, later: dict, spec: Spec, used: set):
    """A node's `inputs` as tensors (a tensor, a list, or keyword arguments)."""
    reference = node.inputs
    if reference is None:
        return previous

    def one(name: str):
        if name == BLOCK_INPUT:
            raise spec.error(
                (*node.loc, "inputs"), "`in` is a block's input; use it inside a block"
            )
        if name not in tensors:
            if name in later:
                at = ".".join(map(str, later[name]))
                raise spec.error(
                    (*node.loc, "inputs"),
                    f"{name!r} is defined later ({at}); an entry reads only earlier names",
                )
            known = [n for n in tensors if not n.startswith("#")]
            raise spec.error(
                (*node.loc, "inputs"), f"no entry named {name!r}" + did_you_mean(name, known)
            )
        used.add(name)
        return tensors[name]

    if isinstance(reference, str):
        return one(reference)
    if isinstance(reference, list):
        return [one(name) for name in reference]
    return {key: one(name) for key, name in reference.items()}


def _call_problem(node: Node, args, exc: Exception) -> str:
    """A layer that cannot be called on what it reads: the entries and their shapes named."""
    reference = node.inputs

    def shape(tensor) -> tuple:
        return tuple(getattr(tensor, "shape", ()))

    if isinstance(args, list) and isinstance(reference, list):
        shown = ", ".join(f"{name} {shape(t)}" for name, t in zip(reference, args, strict=True))
    elif isinstance(args, dict) and isinstance(reference, dict):
        shown = ", ".join(f"{key}={reference[key]} {shape(t)}" for key, t in args.items())
    else:
        name = reference if isinstance(reference, str) else "the previous entry"
        shown = f"{name} {shape(args)}"
    return f"{node.type} cannot be called on {shown}: {first_line(exc)}"
