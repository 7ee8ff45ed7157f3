"""Steering with evidence: a steer benchmarked against prompting and controls (``bench``), scored by a concept
(``concept``), found from examples (``autopilot``) and kept as a versioned recipe (``recipe``).

Sits beside ``explain`` below the Lab: typed against ``core.protocol.LabLike``; a SeedClassifier or a chat
callable used as a concept is duck-typed, never imported.
"""
