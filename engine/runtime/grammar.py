"""Constrained decoding with xgrammar: grammars compiled once per constraint, one matcher per
request, and the logits mask it yields each step (imports torch).

xgrammar was chosen by measurement (SmolLM2-135M's 49,152-token vocabulary, a 20-field schema,
this 2-core CPU): compile 16 ms the first time and nothing once cached, mask fill 5-34 us and
apply ~0.35 ms per token. llguidance's mask apply took 4-30 ms per token on CPU; outlines-core
took 237 ms to compile the same schema and cannot express recursive schemas. ``benchmarks/
structured.py`` measures the figures again on the demo model.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Optional

import torch

from engine.requests import Constraint, InvalidConstraint

log = logging.getLogger("engine.grammar")

CACHE_ENTRIES = 256  # compiled grammars kept (a few hundred kB each for ordinary schemas)


class GrammarCache:
    """Compiled grammars of one model's vocabulary, by constraint; the least recently used go
    first. Compiling happens on the thread that submits (a bad schema is that client's 400, and
    the generation thread never waits for a compile)."""

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: tuple[int, ...]):
        import xgrammar

        self._xgr = xgrammar
        self.vocab_size = vocab_size
        self._info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                             stop_token_ids=list(stop_token_ids))
        self._compiler = xgrammar.GrammarCompiler(self._info, max_threads=2, cache_enabled=False)
        self._compiled: "OrderedDict[Constraint, object]" = OrderedDict()
        self._lock = threading.Lock()
        self.last_compile_s: Optional[float] = None  # None: the last constraint came from the cache

    def compile(self, constraint: Constraint):
        """The compiled grammar for ``constraint``.

        Raises:
            InvalidConstraint: the schema cannot be compiled; the message says why.
        """
        with self._lock:
            compiled = self._compiled.get(constraint)
            if compiled is not None:
                self._compiled.move_to_end(constraint)
                self.last_compile_s = None
                return compiled
        started = time.perf_counter()
        try:
            compiled = self._compiler.compile_grammar(self._grammar(constraint))
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError with the parser's text
            raise InvalidConstraint(f"the JSON schema cannot be used for structured output: {exc}") from None
        self.last_compile_s = time.perf_counter() - started
        log.info("grammar compiled in %.1f ms", self.last_compile_s * 1000,
                 extra={"event": "grammar_compiled", "kind": constraint.kind, "schema": constraint.schema[:500],
                        "ms": round(self.last_compile_s * 1000, 2)})
        with self._lock:
            self._compiled[constraint] = compiled
            while len(self._compiled) > CACHE_ENTRIES:
                self._compiled.popitem(last=False)
        return compiled

    def _grammar(self, constraint: Constraint):
        grammar = self._xgr.Grammar
        if constraint.kind == "any_of":
            return grammar.union(*[self._grammar(part) for part in constraint.parts])
        # Compact JSON: a model allowed any whitespace can pad a reply with it until max_tokens.
        schema = '{"type": "object"}' if constraint.kind == "json_object" else constraint.schema
        body = _with_bounded_numbers(grammar, _valid_string_characters(grammar, grammar.from_json_schema(
            schema, any_whitespace=False, strict_mode=True)))
        if constraint.kind != "tagged_json":
            return body
        return grammar.concat(_literal(grammar, constraint.prefix), body, _literal(grammar, constraint.suffix))

    def matcher(self, compiled) -> "GrammarMask":
        return GrammarMask(self._xgr, compiled, self.vocab_size)


# xgrammar 0.2.8 writes the characters of a string with minLength/maxLength as any but quote,
# backslash, CR and LF: a tab or \x19 would pass raw, which no JSON parser takes. Its unbounded
# strings exclude \0-\x1f. Both take the UTF-16 surrogates U+D800-U+DFFF, whose UTF-8 bytes
# (ED A0 80 ...) are no valid UTF-8: a tiny random model wrote them and its reply decoded to
# U+FFFD three times per character, breaking maxLength. Both classes become one strict class.
_STRING_CHARACTER_CLASSES = (r'[^\"\\\r\n]', r'[^\0-\x1f\"\\\r\n]')
_JSON_STRING_CHARACTER = r'[^\0-\x1f\"\\\ud800-\udfff]'


def _valid_string_characters(grammar, compiled_schema):
    text = str(compiled_schema)
    strict = text
    for loose in _STRING_CHARACTER_CLASSES:
        strict = strict.replace(loose, _JSON_STRING_CHARACTER)
    return compiled_schema if strict == text else grammar.from_ebnf(strict)


# A number the schema gives no bounds is written by xgrammar's own rules with unbounded digit
# runs: a model can write "0.333…" or "100000…" until max_tokens cuts it, and the cut reply does
# not parse. Those rules get capped runs (IEEE doubles carry 15-17 significant digits; JSON
# parsers read longer ones, but no model means them). A schema's own minimum/maximum gives
# xgrammar bounded rules of its own, which these replacements do not touch.
MAX_INTEGER_DIGITS = 16
MAX_FRACTION_DIGITS = 16
MAX_EXPONENT_DIGITS = 3
_UNBOUNDED_NUMBER_RULES = {
    'basic_integer ::= (("0") | (basic_integer_1 [1-9] [0-9]*))':
        f'basic_integer ::= (("0") | (basic_integer_1 [1-9] [0-9]{{0,{MAX_INTEGER_DIGITS - 1}}}))',
    'basic_number_2 ::= (("0") | ([1-9] [0-9]*))':
        f'basic_number_2 ::= (("0") | ([1-9] [0-9]{{0,{MAX_INTEGER_DIGITS - 1}}}))',
    'basic_number_3 ::= ("" | ("." basic_number_digits{1, -1}))':
        f'basic_number_3 ::= ("" | ("." basic_number_digits{{1,{MAX_FRACTION_DIGITS}}}))',
    'basic_number_5 ::= ("" | ([eE] basic_number_4 basic_number_digits{1, -1}))':
        f'basic_number_5 ::= ("" | ([eE] basic_number_4 basic_number_digits{{1,{MAX_EXPONENT_DIGITS}}}))',
}


def _with_bounded_numbers(grammar, compiled_schema):
    """``compiled_schema`` with xgrammar's unbounded integer/number rules given digit caps (whole
    lines are matched, so a schema's ``pattern`` that happens to read alike is left alone)."""
    lines = str(compiled_schema).split("\n")
    bounded = [_UNBOUNDED_NUMBER_RULES.get(line, line) for line in lines]
    if bounded == lines:
        return compiled_schema
    return grammar.from_ebnf("\n".join(bounded))


def _literal(grammar, text: str):
    return grammar.from_ebnf(f"root ::= {json.dumps(text)}")


class GrammarMask:
    """One request's place in its grammar: masks the logits of tokens that cannot come next and
    follows the tokens chosen. Used as a logits processor (``__call__``) in sequential mode and
    by each row of a dynamic batch alike."""

    def __init__(self, xgr, compiled, vocab_size: int):
        self._xgr = xgr
        self.matcher = xgr.GrammarMatcher(compiled)
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def __call__(self, input_ids, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()  # the caller's raw scores stay raw (log-probabilities read them)
        self.matcher.fill_next_token_bitmask(self._bitmask, 0)
        self._xgr.apply_token_bitmask_inplace(scores, self._bitmask.to(scores.device))
        return scores

    def accept(self, token_id: int) -> None:
        """Follow a chosen token.

        Raises:
            ValueError: the grammar does not allow it (the mask was bypassed).
        """
        if not self.matcher.is_terminated() and not self.matcher.accept_token(token_id):
            raise ValueError(f"token {token_id} does not fit the requested format")
