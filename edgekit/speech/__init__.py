"""Early-exit speech recognition: a synthesized corpus (``corpus``), the log-mel front-end
(``frontend``), the multi-exit CTC encoder (``model``, torch side), exit policies and the
runtime that stops at the chosen exit (``exits``, device side). See docs/speech.md."""
