"""Answer extraction, normalisation and format checks on the strings models actually produce."""
import pytest

from jaxllm import answers


@pytest.mark.parametrize("text, expected", [
    ("#### 1,234", "1234"),
    ("$18.00", "18"),
    ("The answer is 18.", "18"),
    ("-7 apples", "-7"),
    ("#### 3\n#### 4", "4"),
    ("no number here", None),
    ("", None),
    ("2.50", "2.5"),
    ("0.50", "0.5"),
    ("7 + 5 = 12\n#### 12", "12"),
    ("7 + 5 = 12\n12 - 3 = 9", "9"),                # no marker: the last number
    ("5 more than 3 gives 8, so 8 in all", "8"),
    ("#### 12 apples, not 13", "12"),              # the number right after the last marker
    ("#### -5", "-5"),
    ("####-5", "-5"),
    ("#### $1,000.50", "1000.5"),
    ("I have 3 apples.\n####", "3"),               # a bare marker: fall back to the last number
    ("12-3", "3"),                                 # a minus between digits is an operator, not a sign
    ("3,4,5", "5"),                                # a list, not a thousands separator
    ("-0", "0"),
    ("1,234,567 people", "1234567"),
])
def test_extract_final_answer(text, expected):
  assert answers.extract_final_answer(text) == expected


@pytest.mark.parametrize("predicted, reference, expected", [
    ("1234", "1,234", True),
    ("18", "18.00", True),
    ("2.5", "2.50", True),
    ("-7", "-7", True),
    ("18", "$18", True),
    ("18 apples", "18", True),
    ("17", "18", False),
    ("-18", "18", False),
    ("1.8", "18", False),
    (None, "18", False),
    ("abc", "18", False),
    ("yes", "yes", True),                          # a non-numeric reference compares as text
])
def test_answers_match(predicted, reference, expected):
  assert answers.answers_match(predicted, reference) is expected


def test_extracted_answers_match_gsm8k_style_references():
  completion = "48 / 2 = 24 clips in May.\n48 + 24 = 72 clips in all.\n#### 1,072"
  assert answers.answers_match(answers.extract_final_answer(completion), "1072")
  assert answers.answers_match(answers.extract_final_answer(completion), "1,072")


@pytest.mark.parametrize("text, expected", [
    ("7 + 5 = 12\n#### 12", True),
    ("#### -3", True),
    ("####12", True),
    ("#### 1,234", True),
    ("The answer is 12.", False),
    ("####", False),
    ("#### twelve", False),
    ("12 ###", False),
])
def test_has_answer_format(text, expected):
  assert answers.has_answer_format(text) is expected
