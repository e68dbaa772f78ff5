"""Islands: content that comes from outside the model into its output.

- **tool calls** — the model writes ``NAME(args)``; the engine runs the registered tool
  and injects `` => result`` into that row, which goes on from there;
- **constraints** — a grammar (regex, JSON schema, Lark) the output must follow, applied
  as a token mask before every draw.

>>> from sazanami import Engine, SamplingParams, load
>>> from sazanami.islands import Islands, builtin_tools
>>> engine = Engine(load())
>>> out = engine.generate("What is 17*23?", SamplingParams(seed=1), islands=Islands(tools=builtin_tools(["calc"])))
"""

from sazanami.islands.builtins import Corpus, builtin_tools, calc
from sazanami.islands.constraints import Constraint
from sazanami.islands.runtime import Islands, drawn_text, marked_text
from sazanami.islands.tools import CallSyntax, Tool, ToolError, ToolRegistry

__all__ = [
    "CallSyntax",
    "Constraint",
    "Corpus",
    "Islands",
    "Tool",
    "ToolError",
    "ToolRegistry",
    "builtin_tools",
    "calc",
    "drawn_text",
    "marked_text",
]
