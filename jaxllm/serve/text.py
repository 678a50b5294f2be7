"""A reply's text as its tokens arrive: incremental detokenization and OpenAI `stop` strings.

Text goes out only once it is final: a multi-byte character cut between two tokens (decoded as U+FFFD) is held
back until its last byte arrives, and so is a tail that could still grow into a stop string, because the
stop string itself is never shown (OpenAI semantics: the reply ends just before it).
"""
from __future__ import annotations

from jaxllm.tokenizer import Tokenizer


class TextStream:
  def __init__(self, tokenizer: Tokenizer, stops: tuple[str, ...] = ()):
    self.tokenizer = tokenizer
    self.stops = tuple(s for s in stops if s)
    self.ids: list[int] = []
    self.shown = 0  # characters of the text already handed out

  def push(self, token: int) -> tuple[str, bool]:
    """Add a token; returns (newly final text, whether a stop string ended the reply)."""
    self.ids.append(token)
    text = self.tokenizer.decode(self.ids)
    # a stop string may straddle earlier text that was held back, never text already shown
    cut = min((i for i in (text.find(s, max(0, self.shown - len(s) + 1)) for s in self.stops) if i >= 0),
              default=-1)
    if cut >= 0:
      delta = text[self.shown:cut]
      self.shown = cut
      return delta, True
    end = len(text)
    while end > self.shown and text[end - 1] == "\ufffd":
      end -= 1
    for k in range(min(max((len(s) for s in self.stops), default=1) - 1, end - self.shown), 0, -1):
      if any(s.startswith(text[end - k:end]) for s in self.stops):
        end -= k
        break
    delta = text[self.shown:end]
    self.shown = end
    return delta, False

  def flush(self) -> str:
    """The held-back tail, when the reply ends for another reason than a stop string."""
    text = self.tokenizer.decode(self.ids)
    delta = text[self.shown:]
    self.shown = len(text)
    return delta
