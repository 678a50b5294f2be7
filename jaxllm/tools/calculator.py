"""The `calculator` tool: exact arithmetic on a string, parsed here by a tokenizer and a recursive-descent parser
(never Python's eval / ast), so a model's call can only ever compute a number or get an error string back.

  evaluate("(7 + 5) * 3 / 4")   -> "9"        evaluate("1 / 0") -> "error: division by zero"
  evaluate("2 ** 10")           -> "1024"     evaluate("import os") -> "error: unexpected character 'i' at 0"

Grammar (numbers are exact rationals; `^` is a synonym of `**`, right-associative and binding tighter than a
leading minus, as in Python: -2 ** 2 = -4):
  expr   := term (('+' | '-') term)*
  term   := unary (('*' | '/' | '//' | '%') unary)*
  unary  := ('+' | '-') unary | power
  power  := atom (('**' | '^') unary)?
  atom   := NUMBER | '(' expr ')'
Every bound below turns a would-be hang or blow-up into an error string: input length, nesting depth, exponent
size, and the size of any intermediate result (digits of numerator and denominator).
"""
from __future__ import annotations

import re
from fractions import Fraction

NAME = "calculator"
DESCRIPTION = "Exact arithmetic: + - * / // % ** and parentheses on integers and decimals."
PARAMETERS = {"type": "object", "properties": {"expression": {"type": "string", "description": "e.g. 7 + 5"}},
              "required": ["expression"]}

MAX_CHARS = 200  # longer expressions are refused before any parsing
MAX_DEPTH = 32  # nested parentheses / unary signs
MAX_EXPONENT = 1000  # |exponent| of a power
MAX_DIGITS = 300  # digits of any intermediate numerator or denominator
DECIMALS = 6  # a non-integer result is shown rounded to this many decimals

_TOKEN_RE = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|(\*\*|//|[-+*/%^()]))")


class CalcError(Exception):
  """Raised inside the parser only; `evaluate` turns it into the error string the model reads."""


def _tokens(text: str) -> list[str]:
  out, pos = [], 0
  while pos < len(text):
    m = _TOKEN_RE.match(text, pos)
    if m is None or m.end() == pos:
      if text[pos:].strip() == "":
        break
      at = pos + len(text[pos:]) - len(text[pos:].lstrip())
      raise CalcError(f"unexpected character {text[at]!r} at {at}")
    out.append(m.group(1) or m.group(2))
    pos = m.end()
  return out


def _bounded(x: Fraction) -> Fraction:
  if max(len(str(abs(x.numerator))), len(str(x.denominator))) > MAX_DIGITS:
    raise CalcError(f"result too large (more than {MAX_DIGITS} digits)")
  return x


class _Parser:
  def __init__(self, tokens: list[str]):
    self.tokens, self.pos, self.depth = tokens, 0, 0

  def peek(self) -> str | None:
    return self.tokens[self.pos] if self.pos < len(self.tokens) else None

  def take(self) -> str:
    token = self.peek()
    if token is None:
      raise CalcError("unexpected end of expression")
    self.pos += 1
    return token

  def nested(self):
    self.depth += 1
    if self.depth > MAX_DEPTH:
      raise CalcError(f"expression nested deeper than {MAX_DEPTH}")

  def expr(self) -> Fraction:
    value = self.term()
    while self.peek() in ("+", "-"):
      value = _bounded(value + self.term() if self.take() == "+" else value - self.term())
    return value

  def term(self) -> Fraction:
    value = self.unary()
    while self.peek() in ("*", "/", "//", "%"):
      op, right = self.take(), self.unary()
      if op == "*":
        value = _bounded(value * right)
        continue
      if right == 0:
        raise CalcError("division by zero")
      value = _bounded(value / right if op == "/" else Fraction(value // right) if op == "//" else value % right)
    return value

  def unary(self) -> Fraction:
    if self.peek() in ("+", "-"):
      self.nested()
      sign = self.take()
      value = self.unary()
      self.depth -= 1
      return -value if sign == "-" else value
    return self.power()

  def power(self) -> Fraction:
    base = self.atom()
    if self.peek() not in ("**", "^"):
      return base
    self.take()
    self.nested()
    exponent = self.unary()
    self.depth -= 1
    if exponent.denominator != 1:
      raise CalcError("only whole-number exponents are supported")
    if abs(exponent) > MAX_EXPONENT:
      raise CalcError(f"exponent {exponent} is too large (limit {MAX_EXPONENT})")
    if base == 0 and exponent < 0:
      raise CalcError("division by zero")
    # Bound the result's size before computing it: digits(base ** e) ~ e * digits(base).
    digits = max(len(str(abs(base.numerator))), len(str(base.denominator)))
    if base not in (0, 1, -1) and abs(int(exponent)) * (digits - 1) > MAX_DIGITS:
      raise CalcError(f"result too large (more than {MAX_DIGITS} digits)")
    return _bounded(base ** int(exponent))

  def atom(self) -> Fraction:
    token = self.take()
    if token == "(":
      self.nested()
      value = self.expr()
      if self.take() != ")":
        raise CalcError("missing ')'")
      self.depth -= 1
      return value
    if token[0].isdigit() or token[0] == ".":
      if len(token) > MAX_DIGITS:
        raise CalcError(f"number too long (more than {MAX_DIGITS} digits)")
      return Fraction(token)
    raise CalcError(f"unexpected {token!r}")


def format_number(x: Fraction) -> str:
  if x.denominator == 1:
    return str(x.numerator)
  return f"{float(round(x, DECIMALS)):.{DECIMALS}f}".rstrip("0").rstrip(".")


def evaluate(expression: object) -> str:
  """The value of `expression` as text, or "error: ..." for anything that is not bounded arithmetic."""
  if not isinstance(expression, str):
    return f"error: expression must be a string, got {type(expression).__name__}"
  if len(expression) > MAX_CHARS:
    return f"error: expression longer than {MAX_CHARS} characters"
  try:
    tokens = _tokens(expression)
    if not tokens:
      return "error: empty expression"
    parser = _Parser(tokens)
    value = parser.expr()
    if parser.peek() is not None:
      raise CalcError(f"unexpected {parser.peek()!r}")
    return format_number(value)
  except CalcError as e:
    return f"error: {e}"


def run(arguments: dict) -> str:
  """The tool's entry: {"expression": "..."} -> result text."""
  if set(arguments) != {"expression"}:
    return f'error: calculator takes {{"expression": "..."}}, got keys {sorted(arguments)}'
  return evaluate(arguments["expression"])
