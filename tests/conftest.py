"""Settings shared by every test run."""

from hypothesis import settings

# CI runners are shared and slow at times: a per-example deadline would fail a correct property test.
settings.register_profile("lvyue", deadline=None)
settings.load_profile("lvyue")
