"""Final-answer extraction and checking, shared by rewards and evals.

The answer format is GSM8K's: worked steps, then `#### <number>`. Extraction is lenient (it falls back to
the last number in the text) so accuracy measures arithmetic; `has_answer_format` measures the format.
Numbers are normalised to a canonical string: "1,234" -> "1234", "$18.00" -> "18", "2.50" -> "2.5",
"-0" -> "0".
"""
from __future__ import annotations

import decimal
import re

# An optional sign (not when glued to a word or digit, so the "-" in "12-3" is an operator), an optional
# "$", then either a comma-grouped integer ("1,234" but not "3,4") or plain digits, then optional decimals.
_NUMBER = r"(?:(?<![\w.])-)?\$?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_FORMAT_RE = re.compile(r"####\s*" + _NUMBER)
_MARKER = "####"


def normalize_number(text: str) -> str | None:
  """The canonical form of a number written as `text` ("$1,234.50" -> "1234.5"); None if not a number."""
  text = text.strip().replace(",", "").replace("$", "").rstrip(".")
  try:
    value = decimal.Decimal(text)
  except decimal.InvalidOperation:
    return None
  if not value.is_finite():
    return None
  out = format(value, "f")  # never scientific notation
  if "." in out:
    out = out.rstrip("0").rstrip(".")
  return "0" if out in ("-0", "") else out


def _last_number(text: str) -> str | None:
  matches = _NUMBER_RE.findall(text)
  return normalize_number(matches[-1]) if matches else None


def extract_final_answer(text: str) -> str | None:
  """The number after the last "####" if there is one; else the last number in the text; else None."""
  _, marker, tail = text.rpartition(_MARKER)
  if marker:
    m = _NUMBER_RE.search(tail)
    if m is not None:
      return normalize_number(m.group())
  return _last_number(text)


def answers_match(predicted: str | None, reference: str) -> bool:
  """Numeric equality after normalising both sides; a non-numeric reference is compared as stripped text.

  `predicted` is normally `extract_final_answer`'s output; free text ("18 apples") is read for its answer.
  """
  if predicted is None:
    return False
  ref = normalize_number(reference)
  if ref is None:
    return predicted.strip() == reference.strip()
  pred = normalize_number(predicted)
  if pred is None:
    pred = extract_final_answer(predicted)
  return pred is not None and decimal.Decimal(pred) == decimal.Decimal(ref)


def has_answer_format(text: str) -> bool:
  """True iff the text contains "#### <number>"."""
  return _FORMAT_RE.search(text) is not None
