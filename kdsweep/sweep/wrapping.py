"""A Tune Searcher around another: what the sweep's wrappers (baselines first, confirmation last) share."""

from __future__ import annotations

import pickle

from ray.tune.search import Searcher


class WrappingSearcher(Searcher):
    """Passes the search properties on to `inner`, and saves itself whole, `inner` included, into Tune's
    experiment state for --resume. (Tune saves each wrapper that names its inner searcher `searcher` on its
    own and only the innermost with its files; these name it `inner`, so they are saved as one.)"""

    def __init__(self, inner: Searcher) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))
