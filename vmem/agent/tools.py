"""The agent's own tools: a spec the model sees and a handler the agent runs.

Memory functions are applied by the reducer; an agent tool (a calculator, a
profile lookup, anything) is validated by the reducer and run here, by the
agent, with its result recorded as the call's result.  A handler that raises
becomes an error result the model sees, never a crashed turn.
"""

from __future__ import annotations

import ast
import inspect
import operator
from typing import Any, Awaitable, Callable, Mapping

import msgspec

from vmem.errors import VmemError
from vmem.models.model import ToolSpec
from vmem.schemas.messages import ToolCall

Handler = Callable[[dict[str, Any]], "str | Awaitable[str]"]


class AgentTool:
    """A tool of the agent's: what the model is told, and the function that runs it."""

    def __init__(self, spec: ToolSpec, handler: Handler) -> None:
        self.spec = spec
        self.handler = handler

    @property
    def name(self) -> str:
        return self.spec.name


class ToolFailed(VmemError):
    """An agent tool could not run on the arguments it was given."""


async def run_tool(tools: Mapping[str, AgentTool], call: ToolCall) -> str:
    """Run one agent tool call; errors become an error result text."""
    tool = tools.get(call.name)
    if tool is None:
        return f"error: no tool named {call.name!r}"
    try:
        args = msgspec.json.decode(call.arguments or "{}")
        result = tool.handler(args)
        if inspect.isawaitable(result):
            result = await result
        return str(result)
    except (msgspec.DecodeError, TypeError, ValueError, KeyError, ArithmeticError, VmemError) as exc:
        return f"error: {call.name} failed: {type(exc).__name__}: {exc}"


_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.USub: operator.neg, ast.UAdd: operator.pos,
}


def evaluate(expression: str) -> float | int:
    """Arithmetic on numbers only (+ - * / // % ** and parentheses); no names, no calls."""
    if len(expression) > 200:
        raise ToolFailed("expression longer than 200 characters")

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 100:
                raise ToolFailed("exponent too large")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        raise ToolFailed(f"not plain arithmetic: {ast.dump(node)[:60]}")

    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ToolFailed(f"cannot parse {expression!r}: {exc.msg}") from None
    return ev(tree)


def calculator_tool() -> AgentTool:
    """A calculator: the offline model calls it for arithmetic."""

    def handler(args: dict[str, Any]) -> str:
        value = evaluate(str(args["expression"]))
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value)

    return AgentTool(
        ToolSpec("calculator", "Evaluate an arithmetic expression exactly.",
                 {"type": "object", "properties": {"expression": {"type": "string"}},
                  "required": ["expression"], "additionalProperties": False}),
        handler,
    )
