"""Helpers shared by the test suite: seeded instances (:mod:`.instances`), brute-force
references (:mod:`.reference`), the tiny model (:mod:`.tiny`) and an in-memory Flower grid
(:mod:`.flower_fakes`)."""
