"""The microcontroller side of edgekit: the C firmware (``firmware/``), its per-model build
(``build``), and the host's serial bridge to it (``protocol``, ``link``, ``board``). Nothing here
imports torch: a board's host needs numpy and pyserial only."""
