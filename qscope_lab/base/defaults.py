"""Library-wide defaults that torch-free code (the CLI's ``--help``) shows too.

``DEFAULT_REPETITION_PENALTY``: every generation (``Lab.generate`` / ``sweep``, the steering panel, ``qscope-lab
steer``) divides the logits of tokens already in the prompt or output by it (multiplies negative ones), unless
given ``repetition_penalty=`` (1.0: off). Small models loop under plain greedy decoding: on the embedded default,
unsteered greedy continuations of 10 English prompts loop on 9 of 10 without it (distinct-2 0.39) and on none at
1.2 and above, distinct-2 reaching its plateau (0.80) at 1.3 (``benchmarks/repetition_default.py``).
``STEER_MODES``: the steering modes ``core.steering`` implements.
"""

DEFAULT_REPETITION_PENALTY = 1.3
STEER_MODES = ("add", "clamp", "ablate", "cap", "orthogonal")
