"""Declaration checks a node class must pass when it is defined (``Node.__init_subclass__``): its
inputs and outputs, its ``run`` signature against the declared inputs, and class attributes that
nearly spell a known one. Each error names the class and the culprit."""

from __future__ import annotations

import difflib
import inspect

from graph_runtime.node import RESERVED_NAMES, InputSpec, Node, NodeDefinitionError, Output


def check_definition(cls: type[Node]) -> None:
    """Catch declaration mistakes when the class is defined, naming the class and the culprit."""
    where = f"node {cls.__module__}.{cls.__qualname__}"
    _check_misspelt_attributes(cls, where)
    for spec in cls.inputs:
        if not isinstance(spec, InputSpec):
            raise NodeDefinitionError(f"{where}: inputs must be InputSpec (use Link/Int/…), got {spec!r}")
    names = [spec.name for spec in cls.inputs]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise NodeDefinitionError(f"{where}: input names declared twice: {sorted(duplicates)}")
    for spec in cls.inputs:
        if spec.name in RESERVED_NAMES or not spec.name.isidentifier():
            raise NodeDefinitionError(f"{where}: input name {spec.name!r} is reserved or not an identifier")
        if spec.type == "COMBO" and spec.choices is None:
            raise NodeDefinitionError(f"{where}: COMBO input {spec.name!r} declares no choices")
    for out in cls.outputs:
        if not isinstance(out, Output):
            raise NodeDefinitionError(f"{where}: outputs must be Output(...), got {out!r}")
    if "run" not in cls.__dict__:
        return  # an abstract intermediate base; concrete subclasses are checked on their own
    params = inspect.signature(cls.run).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not accepts_any:
        missing = [n for n in names if n not in params]
        if missing:
            raise NodeDefinitionError(f"{where}: run() does not accept declared inputs {missing}")
        required = [p.name for p in params.values()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
                    and p.name not in names]
        if required:
            raise NodeDefinitionError(f"{where}: run() requires undeclared inputs {required}")
    if not cls.outputs and not cls.output_node:
        raise NodeDefinitionError(f"{where}: declares no outputs and is not an output node")


def _check_misspelt_attributes(cls: type[Node], where: str) -> None:
    """A public non-callable class attribute that is not inherited but nearly spells an inherited
    one (``long_runing`` for ``long_running``) would be silently ignored: refuse it."""
    known = {name for base in cls.__mro__[1:] for name in vars(base) if not name.startswith("_")}
    for name, value in vars(cls).items():
        if name.startswith("_") or name in known or callable(value) \
                or isinstance(value, (classmethod, staticmethod, property)):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            raise NodeDefinitionError(f"{where}: class attribute {name!r} is not a Node attribute; "
                                      f"did you mean {close[0]!r}?")
