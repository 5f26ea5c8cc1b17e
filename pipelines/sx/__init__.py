"""Serial crystallography (issue 8, in progress): Bragg-spot finding and hit finding so far.

No technique is registered yet: indexing (cctbx, in its own process because cctbx must be
imported before scipy), the simulated stills and the Bragg-preserving reduction codec follow.
"""
