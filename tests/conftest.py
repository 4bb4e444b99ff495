import os
import tempfile

# Nothing in the test suite may wait on the network: a missing model must fail, not download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Decoded-set cache of this test session only: tests never read or fill the user's cache.
os.environ["GENAUG_CACHE"] = tempfile.mkdtemp(prefix="genaug-test-cache-")
